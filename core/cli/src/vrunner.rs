//! `vrunner` / `vrunner.sh`: the entry point Yocto's container classes call.
//!
//! Why it exists: meta-virtualization's `container-cross-install.bbclass` runs
//! `${STAGING_BINDIR_NATIVE}/vrunner.sh --batch-import ...` once per runtime at image time
//! (docs/yocto.md has the exact call). Installing this binary under that name lets the
//! classes switch to vcontainer by changing one path, without being rewritten.
//!
//! Only the batch import is offered: it is all the classes use. Its flags are exactly the
//! class's; anything else is a usage error (exit 2) and upstream's other modes (daemon,
//! ephemeral commands, interactive) are refused by name, pointing at the `vdkr`/`vpdmn`
//! command that does the same. The import itself is `vimport-batch` (one VM boot on a
//! temporary state disk in `$TMPDIR`, removed afterwards, podman storage in vfs).
//!
//! Exit statuses (upstream's: 0 success, 1 failure), plus 2 for usage errors and 124 when
//! `--timeout` passed (nothing is written to `--output` then).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use vcontainer_proto::exit;

use crate::cli::GlobalOptions;
use crate::plugins::PluginSet;
use crate::session::Session;
use crate::tool::{Catalog, Tool};
use crate::vimport::{batch, layout};
use crate::{dispatch, front, plugins, ui};

/// The program names (argv[0]) that select this entry point.
pub const NAMES: &[&str] = &["vrunner", "vrunner.sh"];

/// Upstream vrunner's modes and options the classes do not use, with what to run instead.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "--daemon-start",
        "`vdkr memres start` / `vpdmn memres start`",
    ),
    ("--daemon-stop", "`vdkr memres stop`"),
    ("--daemon-status", "`vdkr memres status`"),
    (
        "--daemon-send",
        "`vdkr <command>` (it uses a running memres VM)",
    ),
    ("--daemon-send-input", "`vdkr <command>`"),
    ("--daemon-interactive", "`vdkr -it <command>`"),
    ("--daemon-run", "`vdkr run`"),
    ("--interactive", "`vdkr -it <command>`"),
    ("-it", "`vdkr -it <command>`"),
    (
        "--output-type",
        "`vdkr --storage F <command>` or `vdkr save`",
    ),
    ("--input", "`vdkr vimport` / `vdkr load`"),
    ("--input-type", "`vdkr vimport`"),
    ("--state-dir", "`vdkr --state-dir DIR <command>`"),
    ("--keep-temp", "`VCONTAINER_LOG=debug` for diagnostics"),
    (
        "--network",
        "`vdkr <command>` (networking is on by default)",
    ),
];

/// The class's call: `vrunner.sh [--no-daemon] --runtime docker|podman --arch A
/// --blob-dir D --batch-import --timeout T --output F --verbose [--input-storage S]
/// -- path:image:tag ...`
#[derive(Debug, Parser)]
#[command(
    name = "vrunner.sh",
    about = "vcontainer's vrunner.sh: the batch import of Yocto's container-cross-install class",
    after_help = "Each entry is PATH:IMAGE:TAG with PATH an OCI layout directory (the longest \
                  ':'-prefix that is a directory, so registry ports in the name work).\n\
                  Exit status: 0 done, 1 failed, 2 usage error, 124 --timeout passed.",
    disable_version_flag = true
)]
struct Args {
    /// Accepted for compatibility: the batch always runs in a VM of its own
    #[arg(long)]
    no_daemon: bool,
    /// Runtime whose storage is built: a runtime plugin's name or alias (default: the
    /// first built-in runtime, docker, as upstream's)
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,
    /// Target architecture (x86_64, aarch64)
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Directory holding the guest blobs for this runtime and arch
    #[arg(long, value_name = "DIR")]
    blob_dir: Option<PathBuf>,
    /// Import the entries into one storage tar (the only mode offered)
    #[arg(long)]
    batch_import: bool,
    /// Seconds the whole batch may take (boot, imports, export); exit 124 after that
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The storage tar to write (docker: entries under docker/; podman: relative to the graph root)
    #[arg(long, value_name = "STORAGE.tar")]
    output: Option<PathBuf>,
    /// Progress and debug messages on stderr
    #[arg(long)]
    verbose: bool,
    /// Existing storage (as written by --output) to add the images to
    #[arg(long, value_name = "TAR")]
    input_storage: Option<PathBuf>,
    /// podman only: vfs (the default; what meta-virtualization's targets use) or overlay
    #[arg(long, value_name = "DRIVER")]
    storage_driver: Option<String>,
    /// PATH:IMAGE:TAG entries
    #[arg(last = true, value_name = "PATH:IMAGE:TAG")]
    entries: Vec<String>,
}

/// True when argv[0] names this entry point.
pub fn is_vrunner(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| NAMES.contains(&n))
}

/// The name to put in front of messages.
fn label(argv: &[OsString]) -> String {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vrunner".to_string())
}

/// Runs the entry point; returns the exit status.
pub fn main(argv: Vec<OsString>) -> i32 {
    let label = label(&argv);
    let usage = |msg: &str| {
        eprintln!(
            "{}\nRun '{label} --help' for the options.",
            ui::error_line(&label, &anyhow::anyhow!("{msg}"))
        );
        exit::USAGE
    };
    // upstream's other modes: named, with what to use instead (before clap, which would
    // only call them unknown)
    let before_entries = argv.iter().skip(1).take_while(|a| *a != "--");
    for a in before_entries {
        let flag = a.to_string_lossy();
        let flag = flag.split_once('=').map_or(&*flag, |(f, _)| f);
        if let Some((_, instead)) = NOT_SUPPORTED.iter().find(|(f, _)| *f == flag) {
            return usage(&format!(
                "{flag} is not supported: this vrunner only does the --batch-import of Yocto's \
                 container classes; use {instead}"
            ));
        }
    }
    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    if !args.batch_import {
        return usage(
            "only --batch-import is supported (the other vrunner modes are vdkr/vpdmn commands)",
        );
    }
    let Some(output) = args.output.clone() else {
        return usage("--batch-import needs --output STORAGE.tar");
    };
    if args.entries.is_empty() {
        return usage("--batch-import needs entries after '--': PATH:IMAGE:TAG ...");
    }
    let plugins = match plugins::discover() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", ui::error_line(&label, &anyhow::Error::from(e)));
            return exit::FAILURE;
        }
    };
    let wanted = args
        .runtime
        .as_deref()
        .unwrap_or(Catalog::default_runtime());
    let tool = match Catalog::from_plugins(&plugins).tool_for(wanted) {
        Ok(t) => t,
        Err(e) => return usage(&format!("--runtime: {e}")),
    };
    match run(args, output, tool, plugins) {
        Ok(code) if code == exit::TOOL_ERROR => exit::FAILURE,
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", ui::error_line(&label, &e));
            exit::FAILURE
        }
    }
}

/// Checks every entry (an OCI layout directory), then runs `vimport-batch` with the class's
/// options on a stateless context: nothing under the build user's `~/.vdkr`/`~/.vpdmn`.
fn run(args: Args, output: PathBuf, tool: Tool, plugins: PluginSet) -> anyhow::Result<i32> {
    for entry in &args.entries {
        let parsed = batch::parse_args(&["--".to_string(), entry.clone()]).map_err(|_| {
            anyhow::anyhow!(
                "batch entry '{entry}': expected PATH:IMAGE:TAG with PATH an existing directory"
            )
        })?;
        let Some(request) = parsed.images.first() else {
            anyhow::bail!("batch entry '{entry}': expected PATH:IMAGE:TAG");
        };
        if !layout::is_layout(&request.path) {
            anyhow::bail!(
                "batch entry '{entry}': {} is not an OCI layout (no index.json or oci-layout)",
                request.path.display()
            );
        }
    }
    let options = GlobalOptions {
        arch: args.arch,
        runtime: Some(tool.runtime.clone()),
        stateless: true,
        input_storage: args.input_storage,
        blob_dir: args.blob_dir,
        no_daemon: true,
        storage_driver: args.storage_driver,
        verbose: args.verbose,
        ..GlobalOptions::default()
    };
    front::init_logging(&Some(tool.clone()), &options);
    let session = Session::new(tool, None, options)?;
    let mut argv: Vec<OsString> = vec![
        "vimport-batch".into(),
        "--output".into(),
        output.into(),
        "--".into(),
    ];
    argv.extend(args.entries.iter().map(OsString::from));
    let mut ctx = front::runtime_context(session, argv, plugins)?;
    if let Some(secs) = args.timeout {
        ctx.settings.timeout_secs = secs;
    }
    tracing::debug!(entries = args.entries.len(), "vrunner.sh --batch-import");
    dispatch::run_runtime_command(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn names() {
        assert!(is_vrunner("/usr/bin/vrunner.sh".as_ref()));
        assert!(is_vrunner("vrunner".as_ref()));
        assert!(!is_vrunner("vdkr".as_ref()));
        assert!(!is_vrunner("vrunner-x".as_ref()));
    }

    #[test]
    fn the_class_call_parses() {
        let a = Args::try_parse_from(argv(&[
            "vrunner.sh",
            "--no-daemon",
            "--runtime",
            "podman",
            "--arch",
            "aarch64",
            "--blob-dir",
            "/b",
            "--batch-import",
            "--timeout",
            "1980",
            "--output",
            "/w/podman-storage-1.tar",
            "--verbose",
            "--input-storage",
            "/w/existing.tar",
            "--",
            "/d/app-oci:app:1",
            "/d/x:reg:5000/y:2",
        ]))
        .expect("parses");
        assert_eq!(a.runtime.as_deref(), Some("podman"));
        assert_eq!(a.timeout, Some(1980));
        assert!(a.batch_import && a.verbose && a.no_daemon);
        assert_eq!(a.entries, ["/d/app-oci:app:1", "/d/x:reg:5000/y:2"]);
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            &["vrunner.sh", "--batch-import", "--bogus"][..],
            &["vrunner.sh", "--runtime", "lxc", "--batch-import"],
            &["vrunner.sh", "--timeout", "soon"],
            &["vrunner.sh", "--daemon-start"],
            &["vrunner.sh", "--output-type=tar", "--batch-import"],
            &[
                "vrunner.sh",
                "--runtime",
                "docker",
                "--output",
                "o.tar",
                "--",
                "d:a:1",
            ],
            &["vrunner.sh", "--batch-import", "--", "d:a:1"],
            &["vrunner.sh", "--batch-import", "--output", "o.tar"],
        ] {
            assert_eq!(main(argv(bad)), 2, "{bad:?}");
        }
        assert_eq!(main(argv(&["vrunner.sh", "--help"])), 0);
    }
}
