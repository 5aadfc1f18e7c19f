//! An OCI image layout directory as vimport sends it: the image chosen for the target arch
//! by the shared reader (vcontainer_oci::read, which verifies every blob), reduced to a
//! single-image layout so the guest never sees more than one manifest.

use std::collections::BTreeSet;
use std::path::Path;

use vcontainer_oci::media::{MEDIA_OCI_INDEX, OCI_LAYOUT_FILE};
use vcontainer_oci::model::Index;
pub use vcontainer_oci::read::{is_layout, Selection, MAX_JSON_BYTES};

use super::error::VimportError;
use super::payload::{Payload, PayloadEntry};
use crate::arch::Arch;

/// The standard marker written into a reduced layout.
const LAYOUT_MARKER: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Chooses the image in `layout` for `target` and verifies its blobs.
pub fn select(layout: &Path, target: Arch) -> Result<Selection, VimportError> {
    Ok(vcontainer_oci::read::select(layout, target)?)
}

/// The reduced layout as tar entries: `oci-layout`, an `index.json` with the one manifest
/// (its index entry as the producer wrote it), and the selected blobs (streamed from the
/// original files).
pub fn payload(selection: &Selection) -> Result<Payload, VimportError> {
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.to_string()),
        manifests: vec![selection.manifest.clone()],
        annotations: None,
    };
    let index_json = serde_json::to_vec(&index).map_err(|source| VimportError::BadJson {
        what: "the reduced index.json".into(),
        source,
    })?;
    let mut entries = vec![
        PayloadEntry::bytes(OCI_LAYOUT_FILE, LAYOUT_MARKER.to_vec()),
        PayloadEntry::bytes("index.json", index_json),
    ];
    let mut dirs = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (digest, path, size) in &selection.blobs {
        if !seen.insert(*digest) {
            continue; // the same layer listed twice is sent once
        }
        let name = digest.blob_entry_name();
        if let Some((dir, _)) = name.rsplit_once('/') {
            dirs.insert(dir.to_string());
        }
        entries.push(PayloadEntry::file(name, path.clone(), *size));
    }
    let mut dir_entries = vec![PayloadEntry::dir("blobs")];
    dir_entries.extend(dirs.into_iter().map(PayloadEntry::dir));
    dir_entries.extend(entries);
    Ok(Payload::new(dir_entries))
}
