//! `OCI_LAYERS` entries: `name:type:content`, content items joined by `+`.
//!
//! * `directories:/usr+/etc` and `files:/bin/sh+/etc/passwd` take paths of the rootfs and
//!   make the image equal to the rootfs there (delta-only, whiteouts for removed files).
//! * `host:/src/a:/dst/a+...` copies host paths (split at the last `:`) into the image.
//! * `packages:/path/to/layer-rootfs` (also `rootfs:`) overlays a directory the build system
//!   prepared for this layer (e.g. a package-manager install) onto the image root.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::{image_path, Source};
use crate::tree::ROOT;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Directories,
    Files,
    Host,
    /// A directory prepared by the build system, laid over the image root.
    #[serde(alias = "dir", alias = "rootfs")]
    Packages,
}

impl LayerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LayerKind::Directories => "directories",
            LayerKind::Files => "files",
            LayerKind::Host => "host",
            LayerKind::Packages => "packages",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDef {
    pub name: String,
    pub kind: LayerKind,
    pub items: Vec<String>,
}

/// Layer names become cache directory names: keep them to a safe alphabet.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        && !n.starts_with('.')
}

pub fn parse_layer_def(s: &str) -> Result<LayerDef> {
    let fields: Vec<&str> = s.split(':').collect();
    if fields.len() < 3 {
        return Err(Error::invalid(format!(
            "layer definition {s:?}: expected name:type:content"
        )));
    }
    let name = fields[0].to_string();
    let kind = match fields[1] {
        "directories" => LayerKind::Directories,
        "files" => LayerKind::Files,
        "host" => LayerKind::Host,
        "packages" | "rootfs" | "dir" => LayerKind::Packages,
        other => {
            return Err(Error::invalid(format!(
            "layer definition {s:?}: unknown type {other:?} (directories, files, host, packages)"
        )))
        }
    };
    let content = fields[2..].join(":");
    let items: Vec<String> = content
        .split('+')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect();
    let def = LayerDef { name, kind, items };
    def.validate()
        .map_err(|e| Error::invalid(format!("layer definition {s:?}: {e}")))?;
    Ok(def)
}

impl LayerDef {
    /// Checks name and items (also for definitions that did not come from a string).
    pub fn validate(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(Error::invalid(format!(
                "layer name {:?} may only hold letters, digits, '.', '_', '-'",
                self.name
            )));
        }
        if self.items.is_empty() {
            return Err(Error::invalid(format!("layer {:?}: no content", self.name)));
        }
        for item in &self.items {
            match self.kind {
                LayerKind::Host => {
                    let (src, dst) = item.rsplit_once(':').ok_or_else(|| {
                        Error::invalid(format!("host layer item {item:?}: expected SRC:DST"))
                    })?;
                    if src.is_empty() || dst.is_empty() {
                        return Err(Error::invalid(format!(
                            "host layer item {item:?}: expected SRC:DST"
                        )));
                    }
                    image_path(dst)?;
                }
                LayerKind::Directories | LayerKind::Files => {
                    image_path(item)?;
                }
                LayerKind::Packages => {}
            }
        }
        Ok(())
    }

    /// The sources of this layer; `rootfs` is the image rootfs that directories/files
    /// layers take their content from.
    pub fn sources(&self, rootfs: Option<&Path>) -> Result<Vec<Source>> {
        let need_rootfs = || {
            rootfs.ok_or_else(|| {
                Error::invalid(format!(
                    "layer {:?} ({}) needs --rootfs",
                    self.name,
                    self.kind.as_str()
                ))
            })
        };
        let mut out = Vec::new();
        for item in &self.items {
            match self.kind {
                LayerKind::Directories | LayerKind::Files => out.push(Source::Mirror {
                    root: need_rootfs()?.to_path_buf(),
                    path: image_path(item)?,
                    follow: self.kind == LayerKind::Directories,
                }),
                LayerKind::Host => {
                    let (src, dst) = item
                        .rsplit_once(':')
                        .ok_or_else(|| Error::invalid(format!("host layer item {item:?}")))?;
                    out.push(Source::Overlay {
                        src: PathBuf::from(src),
                        dst: image_path(dst)?,
                    });
                }
                LayerKind::Packages => out.push(Source::Overlay {
                    src: PathBuf::from(item),
                    dst: ROOT.to_vec(),
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_image_oci_forms() {
        let d = parse_layer_def("base:directories:/usr+/etc").expect("ok");
        assert_eq!(d.kind, LayerKind::Directories);
        assert_eq!(d.items, vec!["/usr", "/etc"]);
        let h = parse_layer_def("cfg:host:/tmp/a:b:/etc/a").expect("ok");
        assert_eq!(h.items, vec!["/tmp/a:b:/etc/a"]);
        assert!(parse_layer_def("x:directories").is_err());
        assert!(parse_layer_def("x:bogus:/a").is_err());
        assert!(parse_layer_def("../x:files:/a").is_err());
        assert!(parse_layer_def("x:files:/../etc").is_err());
        assert!(parse_layer_def("x:host:/nocolon").is_err());
    }
}
