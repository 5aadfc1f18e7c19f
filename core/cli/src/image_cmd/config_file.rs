//! The `image build --config FILE.toml` settings file: the same settings as the options,
//! so a build system can keep one file per image instead of a long command line.
//!
//! Keys are the long option names (`stop-signal`, `base-image`, ...); the repeatable ones
//! are lists or tables (`env = ["A=1"]`, `labels = { k = "v" }`, `ports = ["80"]`,
//! `annotations = {...}`, `layers = ["name:type:content"]`). `entrypoint`/`cmd` are either a
//! shell-word string or a list of words taken as they are. Unknown keys are refused with
//! their name, so a misspelt setting never silently does nothing. Relative paths are
//! relative to the file's directory, so the file means the same from any working directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::args::{CompressionArg, LayerMode};

/// An entrypoint or cmd: a shell-word string, or the words themselves.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Words {
    Line(String),
    List(Vec<String>),
}

/// A tag, or several (`tag = "1.0"` or `tag = ["1.0", "latest"]`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Tags {
    One(String),
    Many(Vec<String>),
}

impl Tags {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Tags::One(t) => vec![t],
            Tags::Many(t) => t,
        }
    }
}

/// Everything `image build` can read from the file. All optional: options override it.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuildFile {
    pub backend: Option<String>,
    pub rootfs: Option<PathBuf>,
    pub output: Option<PathBuf>,
    #[serde(alias = "tags")]
    pub tag: Option<Tags>,

    pub entrypoint: Option<Words>,
    pub cmd: Option<Words>,
    pub entrypoint_args: Option<Words>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, alias = "label")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, alias = "port")]
    pub ports: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_signal: Option<String>,
    #[serde(alias = "author-email")]
    pub author: Option<String>,

    pub arch: Option<String>,
    pub variant: Option<String>,
    pub os: Option<String>,

    #[serde(default, alias = "annotation")]
    pub annotations: BTreeMap<String, String>,
    pub revision: Option<String>,
    pub branch: Option<String>,
    #[serde(alias = "build-date")]
    pub created: Option<String>,
    pub version: Option<String>,

    pub compression: Option<CompressionArg>,
    pub compression_level: Option<i32>,
    pub tar: Option<PathBuf>,
    pub dir_tar: Option<PathBuf>,
    pub root_owned: Option<bool>,
    pub layer_mode: Option<LayerMode>,
    #[serde(default, alias = "layer")]
    pub layers: Vec<String>,
    pub base_image: Option<String>,
    pub base_tag: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub source_date_epoch: Option<i64>,
}

impl BuildFile {
    /// Reads and checks `path`; relative paths in it are made relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<BuildFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        let mut file =
            BuildFile::parse(&text).with_context(|| format!("settings file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        file.rebase_paths(base);
        Ok(file)
    }

    /// Parses the TOML text (paths left as written).
    pub fn parse(text: &str) -> anyhow::Result<BuildFile> {
        // toml's message names the key and shows the line; keep it whole
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    fn rebase_paths(&mut self, base: &Path) {
        for p in [
            &mut self.rootfs,
            &mut self.output,
            &mut self.tar,
            &mut self.dir_tar,
            &mut self.cache_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(b) = &mut self.base_image {
            if Path::new(b.as_str()).is_relative() {
                *b = base.join(b.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_value() {
        let f = BuildFile::parse(
            r#"
            backend = "umoci"
            rootfs = "rootfs"
            entrypoint = "/bin/sh -c"
            cmd = ["echo", "a b"]
            env = ["A=1"]
            labels = { "org.example.x" = "y" }
            ports = ["80", "53/udp"]
            stop-signal = "SIGINT"
            compression = "zstd"
            layers = ["base:directories:/usr"]
            source-date-epoch = 1700000000
            "#,
        )
        .expect("parses");
        assert_eq!(f.backend.as_deref(), Some("umoci"));
        assert_eq!(f.entrypoint, Some(Words::Line("/bin/sh -c".into())));
        assert_eq!(f.cmd, Some(Words::List(vec!["echo".into(), "a b".into()])));
        assert_eq!(f.labels["org.example.x"], "y");
        assert_eq!(f.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(f.compression, Some(CompressionArg::Zstd));
        assert_eq!(f.source_date_epoch, Some(1_700_000_000));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = BuildFile::parse("rootfs = \"r\"\nentrypiont = \"sh\"\n")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("entrypiont"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("img.toml");
        std::fs::write(
            &path,
            "rootfs = \"r\"\noutput = \"/abs/out\"\nbase-image = \"base:1\"\n",
        )
        .expect("write");
        let f = BuildFile::load(&path).expect("load");
        assert_eq!(f.rootfs, Some(dir.path().join("r")));
        assert_eq!(f.output, Some(PathBuf::from("/abs/out")));
        assert_eq!(
            f.base_image,
            Some(dir.path().join("base:1").display().to_string())
        );
    }
}
