//! `vcontainer-guest-image`: builds one guest blob set. scripts/build-guest.sh (make guest)
//! drives it for each runtime.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use vcontainer_guest_image::cache::Cache;
use vcontainer_guest_image::modules::{ModuleIndex, BOOT_MODULES};
use vcontainer_guest_image::rootfs::{RootfsSpec, SquashfsCompression};
use vcontainer_guest_image::runtime_files::{common_files, common_packages, RootfsFile};
use vcontainer_guest_image::{build, Arch, BuildRequest};

#[derive(Parser)]
#[command(version, about = "Builds vcontainer guest blobs from Debian packages")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build <out>/<arch>/<runtime>/{bzImage|Image,initramfs.cpio.gz,rootfs.img,blobs.json}
    Build(BuildArgs),
    /// Print the boot modules a kernel needs, in load order (from its modules.dep)
    Modules {
        /// /lib/modules/<kver> of the kernel
        modules_dir: PathBuf,
    },
    /// Remove leftovers of interrupted builds from the cache
    CleanTemps {
        #[arg(long, default_value = "build/cache")]
        cache: PathBuf,
    },
    /// Remove cache entries not used for some days (published blobs are not affected)
    Prune {
        #[arg(long, default_value = "build/cache")]
        cache: PathBuf,
        #[arg(long, default_value_t = 14)]
        days: u64,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The runtime plugin (libvcontainer_runtime_*.so) declaring the guest packages and
    /// config files; its name is the blob directory name
    #[arg(long)]
    plugin: PathBuf,
    /// Checked against the plugin's name and aliases (a typo fails instead of building the
    /// wrong runtime under the expected name)
    #[arg(long)]
    runtime: Option<String>,
    /// Guest architecture: x86_64 or aarch64 (Debian names amd64/arm64 accepted)
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// The static vcontainer-agent binary (installed as /init)
    #[arg(long)]
    agent: PathBuf,
    /// More Debian packages (repeat or comma-separate); the plugin's, the kernel and the
    /// common guest tools are added automatically
    #[arg(long = "package", value_delimiter = ',')]
    packages: Vec<String>,
    /// Blob root: the set lands in <out>/<arch>/<runtime>/
    #[arg(long, default_value = "build/blobs")]
    out: PathBuf,
    #[arg(long, default_value = "build/cache")]
    cache: PathBuf,
    #[arg(long, default_value = "bookworm")]
    suite: String,
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Protocol version the agent speaks, recorded in blobs.json (default: this tree's
    /// vcontainer-proto version, which the agent built from the same tree speaks)
    #[arg(long, default_value_t = vcontainer_proto::PROTOCOL_VERSION)]
    protocol_version: u32,
    /// squashfs compressor: lz4 (fastest guest reads under TCG), lz4hc or zstd (smaller)
    #[arg(long, default_value = "lz4")]
    compression: SquashfsCompression,
    /// Rebuild the rootfs even when cached (to pick up Debian updates)
    #[arg(long)]
    rebuild_rootfs: bool,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Build(args) => run_build(args),
        Cmd::Modules { modules_dir } => {
            let kver = modules_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let index = ModuleIndex::load(&modules_dir)?;
            for path in index.resolve(BOOT_MODULES, &kver)? {
                println!("{path}");
            }
            Ok(())
        }
        Cmd::Prune { cache, days } => {
            let removed =
                Cache::new(cache).prune(std::time::Duration::from_secs(days * 24 * 3600))?;
            for path in &removed {
                eprintln!("pruned {}", path.display());
            }
            Ok(())
        }
        Cmd::CleanTemps { cache } => {
            let n = Cache::new(cache).remove_stale_temps()?;
            eprintln!("removed {n} unfinished cache entries");
            Ok(())
        }
    }
}

fn run_build(args: BuildArgs) -> Result<()> {
    let arch: Arch = args.arch.parse()?;
    let mut packages: Vec<String> = args.packages;
    packages.push(arch.kernel_package().to_string());
    packages.extend(common_packages().iter().map(|p| p.to_string()));
    let declared = plugin_guest_spec(&args.plugin, args.runtime.as_deref())?;
    packages.extend(declared.packages);
    let files = merge_files(common_files(), declared.files);
    let runtime = declared.name;
    if runtime.is_empty() || runtime.contains(['/', '.']) {
        anyhow::bail!("invalid runtime name {runtime:?}");
    }
    let mut spec = RootfsSpec::new(arch, &args.suite, &args.mirror, packages, files)?;
    spec.compression = args.compression;
    let req = BuildRequest {
        spec,
        runtime,
        agent: args.agent,
        protocol_version: args.protocol_version,
        out_root: args.out,
        cache: Cache::new(args.cache),
        rebuild_rootfs: args.rebuild_rootfs,
    };
    let report = build(&req).with_context(|| format!("building the {} guest", req.runtime))?;
    println!(
        "{} (kernel {}, rootfs {}, initramfs {}, input {})",
        report.blob_dir.display(),
        report.blobs.kernel_version,
        if report.rootfs_built {
            "built"
        } else {
            "cached"
        },
        if report.initramfs_built {
            "built"
        } else {
            "cached"
        },
        &report.blobs.input_hash[..12],
    );
    Ok(())
}

/// What a runtime plugin declares for the guest image.
struct PluginGuestSpec {
    name: String,
    packages: Vec<String>,
    files: Vec<RootfsFile>,
}

/// Loads a runtime plugin and takes its guest package set and config files.
fn plugin_guest_spec(path: &Path, expected_name: Option<&str>) -> Result<PluginGuestSpec> {
    let plugin = vcontainer_abi::host::load_plugin(path)
        .with_context(|| format!("loading runtime plugin {}", path.display()))?;
    let runtime = plugin
        .runtime()
        .with_context(|| format!("{} is not a runtime plugin", path.display()))?;
    if let Some(name) = expected_name {
        if !plugin.answers_to(name) {
            anyhow::bail!(
                "--runtime {name} does not match plugin {} ({})",
                plugin.name,
                path.display()
            );
        }
    }
    let spec = runtime.spec();
    Ok(PluginGuestSpec {
        name: plugin.name.clone(),
        packages: spec.guest_packages.iter().map(|p| p.to_string()).collect(),
        files: spec
            .guest_files
            .iter()
            .map(|f| RootfsFile {
                path: f.path.to_string(),
                mode: f.mode,
                contents: Some(f.contents.to_string()),
            })
            .collect(),
    })
}

/// The runtime's files win over the common ones at the same path.
fn merge_files(common: Vec<RootfsFile>, runtime: Vec<RootfsFile>) -> Vec<RootfsFile> {
    let mut merged: Vec<RootfsFile> = common
        .into_iter()
        .filter(|c| !runtime.iter().any(|r| r.path == c.path))
        .collect();
    merged.extend(runtime);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, contents: &str) -> RootfsFile {
        RootfsFile {
            path: path.into(),
            mode: 0o644,
            contents: Some(contents.into()),
        }
    }

    #[test]
    fn runtime_files_replace_common_ones_at_the_same_path() {
        let merged = merge_files(
            vec![
                f("/etc/hosts", "common"),
                f("/etc/containers/policy.json", "common"),
            ],
            vec![
                f("/etc/containers/policy.json", "plugin"),
                f("/etc/docker/daemon.json", "{}"),
            ],
        );
        let at = |p: &str| {
            let hits: Vec<_> = merged.iter().filter(|x| x.path == p).collect();
            assert_eq!(hits.len(), 1, "{p}: {merged:?}");
            hits[0].contents.clone().unwrap()
        };
        assert_eq!(at("/etc/hosts"), "common");
        assert_eq!(at("/etc/containers/policy.json"), "plugin");
        assert_eq!(at("/etc/docker/daemon.json"), "{}");
    }

    #[test]
    fn a_file_that_is_not_a_plugin_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("libvcontainer_runtime_bogus.so");
        std::fs::write(&bogus, b"not an ELF").unwrap();
        let err = plugin_guest_spec(&bogus, None).err().unwrap();
        assert!(
            format!("{err:#}").contains("libvcontainer_runtime_bogus.so"),
            "{err:#}"
        );
    }
}
