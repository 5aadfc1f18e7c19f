//! The storage driver the guest runtime writes its images with, for this invocation.
//!
//! Why it exists: the storage a batch import exports is deployed into a target rootfs, and it
//! must be in the driver the *target's* runtime reads. meta-virtualization configures the
//! target's podman with `driver = "vfs"`, while the guest's own podman uses overlay on its
//! state disk (faster); docker's target daemon uses overlay2, as the guest's dockerd does
//! (docs/yocto.md, "Facts vcontainer relies on").
//!
//! How: the runtime's plugin declares its drivers (`StorageExport::drivers`): the ones it
//! supports, the environment variable its guest runtime reads as an override (every guest
//! command of the invocation gets it), the default of a batch export, and how a store's tar
//! names its driver. A runtime with no override variable has its driver fixed by its daemon.
//! This module knows no runtime and no driver name.
//!
//! A storage the command starts from (`--input-storage`) decides the driver when none is
//! asked for: containers/storage keeps each driver's images in `<driver>-images/` of the
//! graph root, and a runtime configured for another driver would see none of them (an
//! additive batch would then export two half-storages).

use std::path::{Component, Path};

use vcontainer_abi::runtime::{RuntimeSpec, StorageDrivers};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(
        "--input-storage {path}: it holds {found} storage; --storage-driver {asked} would not see its images"
    )]
    Conflict {
        path: String,
        found: String,
        asked: String,
    },
    #[error("--input-storage {path}: reading the tar: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--storage-driver '{asked}': {runtime} supports {supported}")]
    Unknown {
        asked: String,
        runtime: String,
        supported: String,
    },
    #[error(
        "--storage-driver '{asked}': {runtime}'s storage driver is fixed by its daemon ({supported}, as on the target)"
    )]
    Fixed {
        asked: String,
        runtime: String,
        supported: String,
    },
}

/// The guest environment that selects the driver: `asked` (the `--storage-driver` option),
/// else the driver of the `input` storage tar, else the runtime's batch default for a batch
/// export, else the guest's own configuration (nothing). Checked before any VM work.
pub fn env(
    spec: &RuntimeSpec,
    asked: Option<&str>,
    batch: bool,
    input: Option<&Path>,
) -> Result<Vec<(String, String)>, DriverError> {
    let drivers = &spec.storage_export.drivers;
    let runtime = spec.runtime_binary.to_string();
    let supported = drivers
        .supported
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let found = match input {
        Some(tar) => driver_of(tar, drivers).map_err(|source| DriverError::Read {
            path: tar.display().to_string(),
            source,
        })?,
        None => None,
    };
    if let (Some(found), Some(asked), Some(tar)) = (&found, asked, input) {
        if found != asked {
            return Err(DriverError::Conflict {
                path: tar.display().to_string(),
                found: found.clone(),
                asked: asked.to_string(),
            });
        }
    }
    let is_supported = |d: &str| drivers.supported.iter().any(|s| s.as_str() == d);
    if drivers.override_env.is_empty() {
        return match asked {
            Some(d) if !is_supported(d) => Err(DriverError::Fixed {
                asked: d.to_string(),
                runtime,
                supported,
            }),
            _ => Ok(Vec::new()),
        };
    }
    let driver = match asked {
        Some(d) if is_supported(d) => d,
        Some(d) => {
            return Err(DriverError::Unknown {
                asked: d.to_string(),
                runtime,
                supported,
            })
        }
        None => match found.as_deref() {
            Some(d) => d,
            None if batch && !drivers.batch_default.is_empty() => drivers.batch_default.as_str(),
            None => return Ok(Vec::new()),
        },
    };
    Ok(vec![(drivers.override_env.to_string(), driver.to_string())])
}

/// The supported driver whose `<driver><suffix>/` a store's tar holds (entries relative to
/// the store's root, with or without `./`); None for an empty or unknown one, or when the
/// runtime's tars do not tell. Seeks over file data, so a large tar costs only its headers.
fn driver_of(tar: &Path, drivers: &StorageDrivers) -> std::io::Result<Option<String>> {
    if drivers.images_dir_suffix.is_empty() {
        return Ok(None);
    }
    let mut archive = tar::Archive::new(std::fs::File::open(tar)?);
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let path = entry.path()?;
        let first = path.components().find_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        });
        let Some(dir) = first.and_then(|f| f.strip_suffix(drivers.images_dir_suffix.as_str()))
        else {
            continue;
        };
        if let Some(known) = drivers.supported.iter().find(|k| k.as_str() == dir) {
            return Ok(Some(known.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman() -> RuntimeSpec {
        crate::test_specs::podman()
    }

    fn docker() -> RuntimeSpec {
        crate::test_specs::docker()
    }

    fn driver(d: &str) -> Vec<(String, String)> {
        vec![("STORAGE_DRIVER".to_string(), d.to_string())]
    }

    #[test]
    fn podman_batches_default_to_vfs_and_other_commands_to_the_guest_config() {
        let p = podman();
        assert_eq!(env(&p, None, true, None).expect("batch"), driver("vfs"));
        assert!(env(&p, None, false, None).expect("command").is_empty());
        assert_eq!(
            env(&p, Some("vfs"), false, None).expect("vfs"),
            driver("vfs")
        );
        assert_eq!(
            env(&p, Some("overlay"), true, None).expect("overlay"),
            driver("overlay")
        );
        let e = env(&p, Some("btrfs"), true, None).expect_err("unknown");
        assert!(e.to_string().contains("vfs, overlay"), "{e}");
    }

    #[test]
    fn docker_keeps_overlay2() {
        let d = docker();
        assert!(env(&d, None, true, None).expect("batch").is_empty());
        assert!(env(&d, Some("overlay2"), true, None)
            .expect("o2")
            .is_empty());
        let e = env(&d, Some("vfs"), true, None).expect_err("fixed");
        assert!(e.to_string().contains("overlay2"), "{e}");
    }

    fn storage_tar(dir: &Path, name: &str, entries: &[&str]) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&p).expect("create"));
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_cksum();
            b.append_data(&mut h, e, &b"{}"[..]).expect("append");
        }
        b.finish().expect("finish");
        p
    }

    #[test]
    fn the_input_storage_decides_unless_asked_and_a_conflict_is_refused() {
        let t = tempfile::tempdir().expect("tmp");
        let p = podman();
        let overlay = storage_tar(
            t.path(),
            "o.tar",
            &["./storage.lock", "./overlay-images/images.json"],
        );
        let vfs = storage_tar(
            t.path(),
            "v.tar",
            &["vfs-layers/l.json", "vfs-images/images.json"],
        );
        let empty = storage_tar(t.path(), "e.tar", &["./storage.lock"]);
        // an overlay input keeps a batch (and a command) on overlay
        assert_eq!(
            env(&p, None, true, Some(&overlay)).expect("o"),
            driver("overlay")
        );
        assert_eq!(env(&p, None, false, Some(&vfs)).expect("v"), driver("vfs"));
        assert_eq!(env(&p, None, true, Some(&empty)).expect("e"), driver("vfs"));
        let e = env(&p, Some("vfs"), true, Some(&overlay)).expect_err("conflict");
        assert!(e.to_string().contains("holds overlay storage"), "{e}");
        assert!(env(&p, None, true, Some(&t.path().join("missing.tar"))).is_err());
        // docker storage is not looked into
        let d = docker();
        assert!(env(&d, None, true, Some(&overlay))
            .expect("docker")
            .is_empty());
    }
}
