//! The storage driver the guest runtime writes its images with, for this invocation.
//!
//! Why it exists: the storage a batch import exports is deployed into a target rootfs, and it
//! must be in the driver the *target's* runtime reads. meta-virtualization configures the
//! target's podman with `driver = "vfs"` (container-host-config's storage.conf), while the
//! guest's own podman uses overlay on its state disk (faster). Docker's target daemon uses
//! overlay2, as the guest's dockerd does, so docker has nothing to choose.
//!
//! How: runtimes built on containers/storage (podman, and skopeo's `containers-storage:`
//! transport) read the `STORAGE_DRIVER` environment variable as an override of storage.conf's
//! `driver` (docs/yocto.md); every guest command of the invocation gets it. The runtime is
//! recognised by its import transport, not by its name, so this module knows no plugin.
//!
//! A storage the command starts from (`--input-storage`) decides the driver when none is
//! asked for: containers/storage keeps each driver's images in `<driver>-images/` of the
//! graph root, and a runtime configured for another driver would see none of them (an
//! additive batch would then export two half-storages).

use std::path::{Component, Path};

use vcontainer_abi::runtime::RuntimeSpec;

/// Skopeo's transport of a containers/storage store: the runtimes that read `STORAGE_DRIVER`.
const CONTAINERS_STORAGE: &str = "containers-storage:";
/// The environment variable containers/storage reads as the driver override.
const DRIVER_ENV: &str = "STORAGE_DRIVER";
/// The default driver of a batch export for a containers/storage runtime: what the target's
/// podman is configured with in meta-virtualization.
pub const BATCH_DEFAULT: &str = "vfs";
/// containers/storage drivers a target can use and the guest kernel has.
const KNOWN: &[&str] = &["vfs", "overlay"];
/// docker's one driver, in the guest and on the target.
const DOCKER_DRIVER: &str = "overlay2";

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
    #[error("--storage-driver '{asked}': {runtime} supports {}", KNOWN.join(", "))]
    Unknown { asked: String, runtime: String },
    #[error(
        "--storage-driver '{asked}': {runtime}'s storage driver is fixed by its daemon ({DOCKER_DRIVER}, as on the target)"
    )]
    Fixed { asked: String, runtime: String },
}

/// The guest environment that selects the driver: `asked` (the `--storage-driver` option),
/// else the driver of the `input` storage tar, else [`BATCH_DEFAULT`] for a batch export,
/// else the guest's own configuration (nothing). Checked before any VM work.
pub fn env(
    spec: &RuntimeSpec,
    asked: Option<&str>,
    batch: bool,
    input: Option<&Path>,
) -> Result<Vec<(String, String)>, DriverError> {
    let runtime = spec.runtime_binary.to_string();
    let found = match input {
        Some(tar) if spec.import_transport.as_str() == CONTAINERS_STORAGE => driver_of(tar)
            .map_err(|source| DriverError::Read {
                path: tar.display().to_string(),
                source,
            })?,
        _ => None,
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
    if spec.import_transport.as_str() != CONTAINERS_STORAGE {
        return match asked {
            None => Ok(Vec::new()),
            Some(d) if d == DOCKER_DRIVER => Ok(Vec::new()),
            Some(d) => Err(DriverError::Fixed {
                asked: d.to_string(),
                runtime,
            }),
        };
    }
    let driver = match asked {
        Some(d) if KNOWN.contains(&d) => d,
        Some(d) => {
            return Err(DriverError::Unknown {
                asked: d.to_string(),
                runtime,
            })
        }
        None => match found.as_deref() {
            Some(d) => d,
            None if batch => BATCH_DEFAULT,
            None => return Ok(Vec::new()),
        },
    };
    Ok(vec![(DRIVER_ENV.to_string(), driver.to_string())])
}

/// The driver whose `<driver>-images/` a graph-root tar holds (entries relative to the
/// graph root, with or without `./`); None for an empty or unknown one. Seeks over file
/// data, so a large tar costs only its headers.
fn driver_of(tar: &Path) -> std::io::Result<Option<String>> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar)?);
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let path = entry.path()?;
        let first = path.components().find_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        });
        let Some(dir) = first.and_then(|f| f.strip_suffix("-images")) else {
            continue;
        };
        if let Some(known) = KNOWN.iter().find(|k| **k == dir) {
            return Ok(Some((*known).to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(transport: &str, binary: &str) -> RuntimeSpec {
        let mut s = vcontainer_podman_like();
        s.import_transport = transport.into();
        s.runtime_binary = binary.into();
        s
    }

    fn vcontainer_podman_like() -> RuntimeSpec {
        crate::test_specs::podman()
    }

    fn driver(d: &str) -> Vec<(String, String)> {
        vec![(DRIVER_ENV.to_string(), d.to_string())]
    }

    #[test]
    fn podman_batches_default_to_vfs_and_other_commands_to_the_guest_config() {
        let p = spec(CONTAINERS_STORAGE, "podman");
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
        let d = spec("docker-daemon:", "docker");
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
        let p = spec(CONTAINERS_STORAGE, "podman");
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
        let d = spec("docker-daemon:", "docker");
        assert!(env(&d, None, true, Some(&overlay))
            .expect("docker")
            .is_empty());
    }
}
