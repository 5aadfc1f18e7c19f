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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DriverError {
    #[error("--storage-driver '{asked}': {runtime} supports {}", KNOWN.join(", "))]
    Unknown { asked: String, runtime: String },
    #[error(
        "--storage-driver '{asked}': {runtime}'s storage driver is fixed by its daemon ({DOCKER_DRIVER}, as on the target)"
    )]
    Fixed { asked: String, runtime: String },
}

/// The guest environment that selects the driver: `asked` (the `--storage-driver` option),
/// else `batch_default` for a batch export, else the guest's own configuration (nothing).
pub fn env(
    spec: &RuntimeSpec,
    asked: Option<&str>,
    batch: bool,
) -> Result<Vec<(String, String)>, DriverError> {
    let runtime = spec.runtime_binary.to_string();
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
        None if batch => BATCH_DEFAULT,
        None => return Ok(Vec::new()),
    };
    Ok(vec![(DRIVER_ENV.to_string(), driver.to_string())])
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
        RuntimeSpec {
            runtime_binary: "podman".into(),
            tool_name: "vpdmn".into(),
            state_dir_name: ".vpdmn".into(),
            env_prefix: "VPDMN".into(),
            state_image_name: "podman-state.img".into(),
            guest_storage_path: "/var/lib/containers".into(),
            guest_packages: Default::default(),
            guest_files: Default::default(),
            services: Default::default(),
            import_transport: CONTAINERS_STORAGE.into(),
            storage_export: vcontainer_abi::runtime::StorageExport {
                source_dir: "/var/lib/containers/storage".into(),
                archive_prefix: ".".into(),
                stop_services_first: false,
                description: "".into(),
            },
        }
    }

    #[test]
    fn podman_batches_default_to_vfs_and_other_commands_to_the_guest_config() {
        let p = spec(CONTAINERS_STORAGE, "podman");
        let vfs = vec![(DRIVER_ENV.to_string(), "vfs".to_string())];
        assert_eq!(env(&p, None, true), Ok(vfs.clone()));
        assert_eq!(env(&p, None, false), Ok(Vec::new()));
        assert_eq!(env(&p, Some("vfs"), false), Ok(vfs));
        assert_eq!(
            env(&p, Some("overlay"), true),
            Ok(vec![(DRIVER_ENV.to_string(), "overlay".to_string())])
        );
        let e = env(&p, Some("btrfs"), true).expect_err("unknown");
        assert!(e.to_string().contains("vfs, overlay"), "{e}");
    }

    #[test]
    fn docker_keeps_overlay2() {
        let d = spec("docker-daemon:", "docker");
        assert_eq!(env(&d, None, true), Ok(Vec::new()));
        assert_eq!(env(&d, Some("overlay2"), true), Ok(Vec::new()));
        let e = env(&d, Some("vfs"), true).expect_err("fixed");
        assert!(e.to_string().contains("overlay2"), "{e}");
    }
}
