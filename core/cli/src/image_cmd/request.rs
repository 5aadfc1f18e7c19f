//! Options + settings file -> the backend interface's requests.
//!
//! Everything the user can get wrong is checked here, before a plugin is called, so bad
//! input fails with one clear line and nothing on disk changes (the backends stage their
//! output and only then move it into place, so they never leave a half-written layout).
//!
//! Merge rules for `image build`: an option replaces the file's value; `env`, `labels`,
//! `ports` and `annotations` add to the file's (an option wins over the file for the same
//! name); `--layer` and `--tag` replace the file's whole list, because their order matters.
//!
//! The traceability values (`--revision`, `--branch`, `--created`, `--version`) become
//! config labels under the keys image-oci's umoci flow writes (its `OCI_AUTO_LABELS`), after
//! the user's labels so they win on the same key as they do there, and the same
//! annotations on the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use vcontainer_abi::backend::{
    BaseImage, BuildRequest, Compression, IndexEntry, IndexRequest, LayerSpec, UnpackRequest,
};

use super::args::{BuildArgs, CompressionArg, IndexArgs, LayerMode, UnpackArgs};
use super::config_file::{BuildFile, Words};
use super::values::split_layout_ref;
use super::values::{map_arch, parse_key_value, parse_platform, parse_port, split_index_input};

/// Label and annotation keys of the traceability values, as image-oci writes them:
/// `OCI_IMAGE_REVISION`, `OCI_IMAGE_BRANCH` (under ref.name, as the class does),
/// `OCI_IMAGE_BUILD_DATE`, and the version label the class documents.
pub const TRACE_REVISION: &str = "org.opencontainers.image.revision";
pub const TRACE_BRANCH: &str = "org.opencontainers.image.ref.name";
pub const TRACE_CREATED: &str = "org.opencontainers.image.created";
pub const TRACE_VERSION: &str = "org.opencontainers.image.version";

/// A traceability value that writes nothing: empty, or the class's `none`.
fn is_unset_trace(value: &str) -> bool {
    value.is_empty() || value == "none"
}

/// The environment's say, read once by the caller so this module stays pure.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The global `--arch`, the program name's arch, or the host's (any spelling).
    pub arch: String,
    /// `$SOURCE_DATE_EPOCH`, already parsed.
    pub source_date_epoch: Option<i64>,
}

impl Defaults {
    /// Reads `$SOURCE_DATE_EPOCH` (unset or empty = none; anything else must be seconds).
    pub fn source_date_epoch_from_env() -> anyhow::Result<Option<i64>> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => {
                v.trim().parse::<i64>().map(Some).map_err(|_| {
                    anyhow::anyhow!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")
                })
            }
            Err(_) => Ok(None),
        }
    }
}

/// A build request and the backend that should run it (None: the user named none).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    pub backend: Option<String>,
    pub request: BuildRequest,
    /// Things the user should know that are not errors (printed on stderr).
    pub notes: Vec<String>,
}

fn words(what: &str, w: Words) -> anyhow::Result<Vec<String>> {
    match w {
        Words::List(list) => Ok(list),
        Words::Line(line) => split_words(what, &line),
    }
}

fn split_words(what: &str, line: &str) -> anyhow::Result<Vec<String>> {
    shell_words::split(line).with_context(|| format!("cannot split --{what} '{line}' into words"))
}

fn check_level(compression: Compression, level: Option<i32>) -> anyhow::Result<()> {
    let (name, range) = match compression {
        Compression::Gzip => ("gzip", 1..=9),
        Compression::Zstd => ("zstd", 1..=22),
    };
    match level {
        Some(l) if !range.contains(&l) => bail!(
            "--compression-level {l} is out of range for {name} ({}-{})",
            range.start(),
            range.end()
        ),
        _ => Ok(()),
    }
}

fn kv_list(items: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| parse_key_value(i).map_err(|e| anyhow::anyhow!("{what}: {e}")))
        .collect()
}

/// Merges the options with the settings file (options win) into a checked request.
pub fn build_request(
    args: &BuildArgs,
    file: BuildFile,
    defaults: &Defaults,
) -> anyhow::Result<BuildPlan> {
    let mut notes = Vec::new();
    let layers = layers(args, file.layers, file.layer_mode, &mut notes)?;
    let rootfs = rootfs(args.rootfs.clone().or(file.rootfs), !layers.is_empty())?;
    let Some(output) = args.output.clone().or(file.output) else {
        bail!("missing --output DIR (or output in the settings file)");
    };
    let entrypoint = option_words("entrypoint", args.entrypoint.as_deref(), file.entrypoint)?;
    let cmd = option_words("cmd", args.cmd.as_deref(), file.cmd)?;
    // image-oci: a non-empty OCI_IMAGE_ENTRYPOINT_ARGS is the Cmd, OCI_IMAGE_CMD is not used
    let entrypoint_args = option_words(
        "entrypoint-args",
        args.entrypoint_args.as_deref(),
        file.entrypoint_args,
    )?
    .filter(|words| !words.is_empty());
    let cmd = entrypoint_args.or(cmd);
    let mut tags = if args.tag.is_empty() {
        file.tag.map(|t| t.into_vec()).unwrap_or_default()
    } else {
        args.tag.clone()
    }
    .into_iter();
    // file first, options after: the backend replaces an earlier NAME= in place
    let env = kv_list(&file.env, "env in the settings file")?
        .into_iter()
        .chain(args.env.iter().cloned())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let trace = trace(
        args,
        [file.revision, file.branch, file.created, file.version],
    );
    let mut labels = file.labels;
    labels.extend(args.label.iter().cloned());
    labels.extend(trace.iter().cloned());
    let mut annotations: BTreeMap<String, String> = file.annotations;
    annotations.extend(args.annotation.iter().cloned());
    annotations.extend(trace);
    let arch_text = (args.arch.clone().or(file.arch)).unwrap_or_else(|| defaults.arch.clone());
    let (arch, implied_variant) = map_arch(&arch_text);
    let compression = match args.compression.or(file.compression) {
        Some(CompressionArg::Zstd) => Compression::Zstd,
        Some(CompressionArg::Gzip) | None => Compression::Gzip,
    };
    let compression_level = args.compression_level.or(file.compression_level);
    check_level(compression, compression_level)?;
    let base_tag = args.base_tag.clone().or(file.base_tag);
    let base_image = base_image(args.base_image.clone().or(file.base_image), base_tag)?;
    Ok(BuildPlan {
        backend: args.backend.clone().or(file.backend),
        notes,
        request: BuildRequest {
            rootfs,
            output,
            tag: tags.next(),
            extra_tags: tags.collect(),
            entrypoint,
            cmd,
            env,
            labels,
            ports: ports(&file.ports, &args.port)?,
            user: args.user.clone().or(file.user),
            workdir: args.workdir.clone().or(file.workdir),
            stop_signal: args.stop_signal.clone().or(file.stop_signal),
            author: args.author.clone().or(file.author),
            arch,
            variant: args.variant.clone().or(file.variant).or(implied_variant),
            os: args.os.clone().or(file.os),
            annotations,
            compression,
            compression_level,
            tar: args.tar.clone().or(file.tar),
            dir_tar: args.dir_tar.clone().or(file.dir_tar),
            root_owned: args.root_owned || file.root_owned.unwrap_or(false),
            layers,
            base_image,
            cache_dir: args.cache_dir.clone().or(file.cache_dir),
            source_date_epoch: args
                .source_date_epoch
                .or(file.source_date_epoch)
                .or(defaults.source_date_epoch),
            force: args.force,
        },
    })
}

/// The layer definitions (`--layer` replaces the file's list: order matters), checked
/// against `--layer-mode`.
fn layers(
    args: &BuildArgs,
    file_layers: Vec<String>,
    file_mode: Option<LayerMode>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<LayerSpec>> {
    let text = if args.layer.is_empty() {
        file_layers
    } else {
        args.layer.clone()
    };
    let layers = text
        .iter()
        .map(|l| LayerSpec::parse(l).map_err(|e| anyhow::anyhow!("--layer: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(match (args.layer_mode.or(file_mode), layers.is_empty()) {
        (Some(LayerMode::Multi), true) => {
            bail!("--layer-mode multi needs at least one --layer NAME:TYPE:CONTENT")
        }
        (Some(LayerMode::Single), false) => {
            notes.push(format!(
                "--layer-mode single: {} layer definition(s) ignored, the whole rootfs is one layer",
                layers.len()
            ));
            Vec::new()
        }
        _ => layers,
    })
}

/// The rootfs dir; layer definitions of host copies or prepared dirs need none.
fn rootfs(rootfs: Option<PathBuf>, has_layers: bool) -> anyhow::Result<PathBuf> {
    match rootfs {
        Some(r) if !r.is_dir() => bail!("rootfs {} is not a directory", r.display()),
        Some(r) => Ok(r),
        None if has_layers => Ok(PathBuf::new()),
        None => bail!("missing --rootfs DIR (or rootfs in the settings file)"),
    }
}

/// A word list: the option's line (split as a shell would) wins over the file's value.
fn option_words(
    what: &str,
    line: Option<&str>,
    file: Option<Words>,
) -> anyhow::Result<Option<Vec<String>>> {
    match (line, file) {
        (Some(line), _) => split_words(what, line).map(Some),
        (None, Some(w)) => words(what, w).map(Some),
        (None, None) => Ok(None),
    }
}

/// The traceability labels that write something (revision, branch, created, version).
fn trace(args: &BuildArgs, file: [Option<String>; 4]) -> Vec<(String, String)> {
    let [revision, branch, created, version] = file;
    [
        (TRACE_REVISION, args.revision.clone().or(revision)),
        (TRACE_BRANCH, args.branch.clone().or(branch)),
        (TRACE_CREATED, args.created.clone().or(created)),
        (TRACE_VERSION, args.version.clone().or(version)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.filter(|v| !is_unset_trace(v)).map(|v| (k.to_string(), v)))
    .collect()
}

/// The file's ports, then the options', each once.
fn ports(file: &[String], options: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ports: Vec<String> = Vec::new();
    for p in file
        .iter()
        .map(|p| parse_port(p))
        .chain(options.iter().cloned().map(Ok))
    {
        let p = p.map_err(|e| anyhow::anyhow!("ports in the settings file: {e}"))?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(ports)
}

/// The base image layout (`DIR[:TAG]`, or a separate tag), which must be an OCI layout.
fn base_image(text: Option<String>, tag: Option<String>) -> anyhow::Result<Option<BaseImage>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let base = match tag {
        Some(tag) => BaseImage {
            path: PathBuf::from(text),
            tag: Some(tag),
        },
        None => {
            let (path, tag) = split_layout_ref(&text);
            BaseImage { path, tag }
        }
    };
    if !base.path.join("index.json").is_file() {
        bail!(
            "base image {} is not an OCI layout (no index.json)",
            base.path.display()
        );
    }
    Ok(Some(base))
}

/// `image unpack` options -> request.
pub fn unpack_request(args: &UnpackArgs) -> anyhow::Result<UnpackRequest> {
    if !args.image.join("index.json").is_file() {
        bail!(
            "{} is not an OCI layout (no index.json)",
            args.image.display()
        );
    }
    let platform = args
        .platform
        .as_deref()
        .map(parse_platform)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
    Ok(UnpackRequest {
        image: args.image.clone(),
        tag: args.tag.clone(),
        platform,
        bundle: args.bundle.clone(),
        force: args.force,
    })
}

/// `image index` options -> request.
pub fn index_request(args: &IndexArgs, defaults: &Defaults) -> anyhow::Result<IndexRequest> {
    let images = args
        .images
        .iter()
        .map(|text| {
            let (layout, tag, platform) =
                split_index_input(text).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !layout.join("index.json").is_file() {
                bail!("{} is not an OCI layout (no index.json)", layout.display());
            }
            Ok(IndexEntry {
                layout,
                tag,
                platform,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(IndexRequest {
        output: args.output.clone(),
        tag: args.tag.clone(),
        images,
        flat: args.flat,
        tar: args.tar.clone(),
        dir_tar: args.dir_tar.clone(),
        annotations: args.annotation.iter().cloned().collect(),
        source_date_epoch: args.source_date_epoch.or(defaults.source_date_epoch),
        force: args.force,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(argv: &[&str]) -> BuildArgs {
        let cli = super::super::args::ImageArgs::try_parse_from(
            ["image", "build"].iter().chain(argv.iter()),
        )
        .expect("parses");
        match cli.command {
            super::super::args::ImageCommand::Build(b) => *b,
            other => panic!("not build: {other:?}"),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            arch: "x86_64".into(),
            source_date_epoch: Some(5),
        }
    }

    #[test]
    fn options_become_the_request() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path().display().to_string();
        let args = parse(&[
            "--rootfs",
            &r,
            "--output",
            "/o",
            "--entrypoint",
            "/bin/sh -c",
            "--cmd",
            "echo 'a b'",
            "--env",
            "A=1",
            "--port",
            "80",
            "--port",
            "53/udp",
            "--arch",
            "armv7",
            "--revision",
            "abc",
            "--annotation",
            "x.y=z",
            "--compression",
            "zstd",
            "--compression-level",
            "19",
        ]);
        let plan = build_request(&args, BuildFile::default(), &defaults()).expect("ok");
        let q = plan.request;
        assert_eq!(plan.backend, None);
        assert_eq!(q.entrypoint, Some(vec!["/bin/sh".into(), "-c".into()]));
        assert_eq!(q.cmd, Some(vec!["echo".into(), "a b".into()]));
        assert_eq!(q.env, ["A=1"]);
        assert_eq!(q.ports, ["80/tcp", "53/udp"]);
        assert_eq!((q.arch.as_str(), q.variant.as_deref()), ("arm", Some("v7")));
        assert_eq!(q.annotations[TRACE_REVISION], "abc");
        assert_eq!(q.labels[TRACE_REVISION], "abc");
        assert_eq!(q.annotations["x.y"], "z");
        assert_eq!(q.compression, Compression::Zstd);
        assert_eq!(q.source_date_epoch, Some(5));
    }

    #[test]
    fn options_override_the_file_and_lists_merge() {
        let root = tempfile::tempdir().expect("tmp");
        let file = BuildFile::parse(&format!(
            r#"
            backend = "sloci"
            rootfs = "{}"
            output = "/from-file"
            user = "file"
            cmd = ["a", "b c"]
            entrypoint = "/bin/true"
            env = ["A=file", "B=file"]
            labels = {{ k1 = "file", k2 = "file" }}
            ports = ["22"]
            source-date-epoch = 7
            layers = ["f:files:/x"]
            "#,
            root.path().display()
        ))
        .expect("file");
        let args = parse(&[
            "--backend",
            "umoci",
            "--user",
            "flag",
            "--env",
            "A=flag",
            "--label",
            "k2=flag",
            "--port",
            "22/tcp",
            "--entrypoint",
            "",
        ]);
        let plan = build_request(&args, file, &defaults()).expect("ok");
        let q = plan.request;
        assert_eq!(plan.backend.as_deref(), Some("umoci"));
        assert_eq!(q.output, PathBuf::from("/from-file"));
        assert_eq!(q.user.as_deref(), Some("flag"));
        assert_eq!(q.cmd, Some(vec!["a".into(), "b c".into()]));
        assert_eq!(
            q.entrypoint,
            Some(vec![]),
            "'' clears the file's entrypoint"
        );
        assert_eq!(q.env, ["A=file", "B=file", "A=flag"]);
        assert_eq!(q.labels["k1"], "file");
        assert_eq!(q.labels["k2"], "flag");
        assert_eq!(q.ports, ["22/tcp"]);
        assert_eq!(q.source_date_epoch, Some(7));
        assert_eq!(q.layers.len(), 1);
        assert_eq!(q.arch, "amd64");
    }

    #[test]
    fn image_oci_variables_map_to_the_request() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path().display().to_string();
        let argv = [
            "--rootfs",
            &r,
            "--output",
            "/o",
            "--tag",
            "1.0",
            "--tag",
            "latest",
            "--cmd",
            "/bin/sh",
            "--entrypoint-args",
            "-v 'a b'",
            "--label",
            "org.opencontainers.image.created=user",
            "--branch",
            "main",
            "--build-date",
            "2026-01-01T00:00:00Z",
            "--revision",
            "none",
            "--layer-mode",
            "single",
            "--layer",
            "a:files:/x",
            "--dir-tar",
            "/o-dir.tar",
            "--root-owned",
        ];
        let plan = build_request(&parse(&argv), BuildFile::default(), &defaults()).expect("ok");
        let q = plan.request;
        assert_eq!(q.tag.as_deref(), Some("1.0"));
        assert_eq!(q.extra_tags, ["latest"]);
        assert_eq!(q.cmd, Some(vec!["-v".into(), "a b".into()]));
        assert_eq!(q.labels[TRACE_BRANCH], "main");
        assert_eq!(q.annotations[TRACE_BRANCH], "main");
        assert_eq!(
            q.labels[TRACE_CREATED], "2026-01-01T00:00:00Z",
            "the class's wins"
        );
        assert!(!q.labels.contains_key(TRACE_REVISION), "none writes none");
        assert!(q.layers.is_empty(), "single mode ignores layers");
        assert_eq!(plan.notes.len(), 1);
        assert_eq!(q.dir_tar, Some(PathBuf::from("/o-dir.tar")));
        assert!(q.root_owned);

        // an empty ENTRYPOINT_ARGS leaves the Cmd alone; the file's tag list is used
        let file = BuildFile::parse("tag = [\"a\", \"b\"]\nentrypoint-args = \"\"\ncmd = \"x\"")
            .expect("file");
        let plan = build_request(
            &parse(&["--rootfs", &r, "--output", "/o"]),
            file,
            &defaults(),
        )
        .expect("ok");
        assert_eq!(plan.request.cmd, Some(vec!["x".into()]));
        assert_eq!(plan.request.tag.as_deref(), Some("a"));
        assert_eq!(plan.request.extra_tags, ["b"]);
    }

    #[test]
    fn bad_input_is_refused() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path().display().to_string();
        let cases: [(&[&str], &str); 5] = [
            (&["--output", "/o"], "missing --rootfs"),
            (&["--rootfs", &r], "missing --output"),
            (
                &["--rootfs", "/nonexistent/r", "--output", "/o"],
                "not a directory",
            ),
            (
                &[
                    "--rootfs",
                    &r,
                    "--output",
                    "/o",
                    "--compression-level",
                    "12",
                ],
                "out of range for gzip",
            ),
            (
                &["--rootfs", &r, "--output", "/o", "--layer", "x:packages:y"],
                "unknown type 'packages'",
            ),
        ];
        for (argv, want) in cases {
            let err = build_request(&parse(argv), BuildFile::default(), &defaults())
                .expect_err("refused")
                .to_string();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
        let file = BuildFile::parse("ports = [\"99999\"]").expect("file");
        let err = build_request(
            &parse(&["--rootfs", &r, "--output", "/o"]),
            file,
            &defaults(),
        )
        .expect_err("refused");
        assert!(format!("{err:#}").contains("99999"), "{err:#}");
    }
}
