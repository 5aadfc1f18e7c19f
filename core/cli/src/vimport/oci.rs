//! The few OCI/Docker JSON documents vimport reads, as serde types.
//!
//! Parsed as whole documents (minified or pretty, any key order), never by line. Unknown
//! fields are kept in `extra` so that a descriptor copied into the reduced index.json keeps
//! everything the producer wrote (annotations, urls, artifactType, ...).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The annotation holding a manifest's tag in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a descriptor points at, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorKind {
    Index,
    Manifest,
    Other,
}

/// `{"mediaType", "digest", "size", "platform"?, "annotations"?, ...}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn kind(&self) -> DescriptorKind {
        match self.media_type.as_str() {
            MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => DescriptorKind::Index,
            MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => DescriptorKind::Manifest,
            _ => DescriptorKind::Other,
        }
    }

    /// The tag recorded in the layout (`org.opencontainers.image.ref.name`), if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// `{"architecture", "os", "variant"?, ...}` of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Display for Platform {
    /// `linux/arm64/v8`, the form docker and skopeo print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = if self.os.is_empty() { "?" } else { &self.os };
        let arch = if self.architecture.is_empty() {
            "?"
        } else {
            &self.architecture
        };
        write!(f, "{os}/{arch}")?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// index.json and nested image-index blobs (OCI index or Docker manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config vimport checks.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
}

/// The `oci-layout` marker file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutMarker {
    pub image_layout_version: String,
}

/// The standard marker written into a reduced layout.
pub const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// One entry of a docker-archive's manifest.json (`docker save`).
#[derive(Debug, Clone, Deserialize)]
pub struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minified_and_reordered_index_parse_the_same() {
        let pretty = r#"{
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:aa",
                    "size": 5,
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
                }
            ]
        }"#;
        // platform before digest, everything on one line
        let minified = r#"{"manifests":[{"platform":{"os":"linux","variant":"v8","architecture":"arm64"},"size":5,"digest":"sha256:aa","mediaType":"application/vnd.oci.image.manifest.v1+json"}],"schemaVersion":2}"#;
        let a: Index = serde_json::from_str(pretty).expect("pretty");
        let b: Index = serde_json::from_str(minified).expect("minified");
        assert_eq!(a.manifests, b.manifests);
        let p = a.manifests[0].platform.as_ref().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(a.manifests[0].kind(), DescriptorKind::Manifest);
    }

    #[test]
    fn unknown_descriptor_fields_survive_a_round_trip() {
        let text = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"artifactType":"x/y","urls":["u"],"annotations":{"org.opencontainers.image.ref.name":"v1"}}"#;
        let d: Descriptor = serde_json::from_str(text).expect("parse");
        assert_eq!(d.ref_name(), Some("v1"));
        let back = serde_json::to_value(&d).expect("serialize");
        assert_eq!(back["artifactType"], "x/y");
        assert_eq!(back["urls"][0], "u");
    }
}
