//! The read side of the OCI model: the documents an untrusted layout holds, as serde types.
//!
//! Built on oci-spec where its types fit: image manifests are [`ImageManifest`] and
//! platforms are oci-spec's [`Platform`]. Own types only where oci-spec is stricter than
//! real layouts or loses what we must keep:
//! - [`Index`]/[`IndexEntry`]: entries without `mediaType` occur (told index from manifest by
//!   shape), a bad digest must be refused by our [`crate::Digest`] with its own message, and
//!   an entry copied into a reduced index.json must keep every field the producer wrote
//!   (annotations, urls, artifactType, ...; oci-spec's `Descriptor` drops unknown fields).
//! - [`ImageConfig`]: only the platform fields, all optional (oci-spec requires
//!   `architecture` and `rootfs`; `docker save` configs and hand-made images lack them and
//!   are accepted with a warning).
//!
//! Parsed as whole documents (minified or pretty, any key order), never by line. The writer
//! of byte-exact layouts (plugins/ocibuild/src/spec.rs) has its own structs, which says why.

use std::collections::BTreeMap;

pub use oci_spec::image::{ImageManifest, Platform};
use serde::{Deserialize, Deserializer, Serialize};

use crate::media;

/// What a descriptor points at, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorKind {
    Index,
    Manifest,
    Other,
}

/// One entry of an index: `{"mediaType", "digest", "size", "platform"?, "annotations"?, ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(
        default,
        deserialize_with = "lenient_platform",
        skip_serializing_if = "Option::is_none"
    )]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Every other field, kept for the copy.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl IndexEntry {
    pub fn kind(&self) -> DescriptorKind {
        if media::is_index(&self.media_type) {
            DescriptorKind::Index
        } else if media::is_manifest(&self.media_type) {
            DescriptorKind::Manifest
        } else {
            DescriptorKind::Other
        }
    }

    /// The tag recorded in the layout (`org.opencontainers.image.ref.name`), if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(media::ANNOTATION_REF_NAME)
            .map(String::as_str)
    }
}

/// A platform as indexes write it, with `architecture` and `os` optional (empty when absent).
fn lenient_platform<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Platform>, D::Error> {
    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        os: String,
        #[serde(default, rename = "os.version")]
        os_version: Option<String>,
        #[serde(default, rename = "os.features")]
        os_features: Option<Vec<String>>,
        #[serde(default)]
        variant: Option<String>,
    }
    let Some(l) = Option::<Lenient>::deserialize(d)? else {
        return Ok(None);
    };
    let mut p = Platform::default();
    p.set_architecture(l.architecture.as_str().into());
    p.set_os(l.os.as_str().into());
    p.set_os_version(l.os_version);
    p.set_os_features(l.os_features);
    p.set_variant(l.variant);
    Ok(Some(p))
}

/// `linux/arm64/v8`, the form docker and skopeo print (`?` for a missing part).
pub fn platform_string(p: &Platform) -> String {
    let os = p.os().to_string();
    let arch = p.architecture().to_string();
    let mut s = format!(
        "{}/{}",
        if os.is_empty() { "?" } else { &os },
        if arch.is_empty() { "?" } else { &arch }
    );
    if let Some(v) = p.variant().as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// index.json and nested image-index blobs (OCI index or Docker manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<IndexEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The platform parts of an image config, all optional.
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
        assert_eq!(platform_string(p), "linux/arm64/v8");
        assert_eq!(a.manifests[0].kind(), DescriptorKind::Manifest);
    }

    #[test]
    fn entries_without_media_type_or_os_are_read() {
        let text = r#"{"digest":"sha256:aa","size":1,"platform":{"architecture":"amd64"}}"#;
        let e: IndexEntry = serde_json::from_str(text).expect("parse");
        assert_eq!(e.kind(), DescriptorKind::Other);
        assert!(e.media_type.is_empty());
        let p = e.platform.as_ref().expect("platform");
        assert_eq!(platform_string(p), "?/amd64");
    }

    #[test]
    fn unknown_descriptor_fields_survive_a_round_trip() {
        let text = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"artifactType":"x/y","urls":["u"],"data":"e30=","annotations":{"org.opencontainers.image.ref.name":"v1","z":"1"},"platform":{"architecture":"arm","os":"linux","variant":"v7"}}"#;
        let d: IndexEntry = serde_json::from_str(text).expect("parse");
        assert_eq!(d.ref_name(), Some("v1"));
        let back = serde_json::to_value(&d).expect("serialize");
        let orig: serde_json::Value = serde_json::from_str(text).expect("value");
        assert_eq!(back, orig, "a copied entry keeps every field");
    }
}
