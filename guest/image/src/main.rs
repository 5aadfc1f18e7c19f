//! `vcontainer-guest-image`: builds one guest blob set. scripts/build-guest.sh (make guest)
//! drives it for each runtime.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vcontainer_guest_image::cache::Cache;
use vcontainer_guest_image::modules::{ModuleIndex, BOOT_MODULES};
use vcontainer_guest_image::rootfs::{RootfsSpec, SquashfsCompression};
use vcontainer_guest_image::runtime_files::{common_files, common_packages, runtime_files};
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
    /// Runtime plugin name: the blob directory name and its config files (docker, podman)
    #[arg(long)]
    runtime: String,
    /// Guest architecture: x86_64 or aarch64 (Debian names amd64/arm64 accepted)
    #[arg(long, default_value = "x86_64")]
    arch: String,
    /// The static vcontainer-agent binary (installed as /init)
    #[arg(long)]
    agent: PathBuf,
    /// The runtime's Debian packages (repeat or comma-separate); the kernel and the common
    /// guest tools are added automatically
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
    let mut files = common_files();
    files.extend(runtime_files(&args.runtime));
    let mut spec = RootfsSpec::new(arch, &args.suite, &args.mirror, packages, files)?;
    spec.compression = args.compression;
    if args.runtime.is_empty() || args.runtime.contains(['/', '.']) {
        anyhow::bail!("invalid runtime name {:?}", args.runtime);
    }
    let req = BuildRequest {
        spec,
        runtime: args.runtime,
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
