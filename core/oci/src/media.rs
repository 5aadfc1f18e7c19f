//! Media types, annotation keys and layout file names of the OCI image spec. The Docker
//! schema-2 equivalents that layouts still carry (`docker save`, older registries) are
//! recognised through oci-spec's own table (`ToDockerV2S2`), not written out here.

use oci_spec::image::{MediaType, ToDockerV2S2};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The annotation holding a manifest's tag in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";

/// The layout marker file and the content we write into it (with Go's trailing newline).
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_CONTENT: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}\n";

/// True when `media_type` is `oci` or its Docker schema-2 equivalent in oci-spec's table.
fn names(oci: &MediaType, media_type: &str) -> bool {
    MediaType::from(media_type) == *oci || oci.to_docker_v2s2().is_ok_and(|d| d == media_type)
}

/// True for an image index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    names(&MediaType::ImageIndex, media_type)
}

/// True for an image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    names(&MediaType::ImageManifest, media_type)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer of `media_type` (OCI, or Docker schema 2), or None when it
/// names no layer we read. oci-spec's table has no Docker equivalent of the uncompressed OCI
/// layer; Docker's (written by containers/image) is its gzip type without `.gzip`.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    let docker_uncompressed = MediaType::ImageLayerGzip
        .to_docker_v2s2()
        .ok()
        .and_then(|gzip| gzip.strip_suffix(".gzip"));
    if names(&MediaType::ImageLayerGzip, media_type) {
        Some(LayerCompression::Gzip)
    } else if names(&MediaType::ImageLayerZstd, media_type) {
        Some(LayerCompression::Zstd)
    } else if names(&MediaType::ImageLayer, media_type) || docker_uncompressed == Some(media_type) {
        Some(LayerCompression::None)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_and_docker_schema2_types_are_recognised_and_nothing_else() {
        assert!(is_index(MEDIA_OCI_INDEX));
        assert!(is_index(
            "application/vnd.docker.distribution.manifest.list.v2+json"
        ));
        assert!(!is_index(MEDIA_OCI_MANIFEST));
        assert!(is_manifest(MEDIA_OCI_MANIFEST));
        assert!(is_manifest(
            "application/vnd.docker.distribution.manifest.v2+json"
        ));
        assert!(!is_manifest(MEDIA_OCI_CONFIG));
        for (media_type, compression) in [
            (MEDIA_OCI_LAYER_TAR, LayerCompression::None),
            (MEDIA_OCI_LAYER_GZIP, LayerCompression::Gzip),
            (MEDIA_OCI_LAYER_ZSTD, LayerCompression::Zstd),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                LayerCompression::None,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                LayerCompression::Gzip,
            ),
        ] {
            assert_eq!(
                layer_compression(media_type),
                Some(compression),
                "{media_type}"
            );
        }
        assert_eq!(layer_compression(MEDIA_OCI_CONFIG), None);
        assert_eq!(layer_compression("application/octet-stream"), None);
    }
}
