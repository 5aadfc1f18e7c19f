//! Fuzz target: the OCI layout reader behind vimport (core/oci/src/read.rs, through
//! core/cli/src/vimport/), on untrusted layouts. The first byte picks how the rest is used:
//! - 0: as `index.json` of a layout that holds one valid amd64 image's blobs;
//! - 1: as an image manifest blob that index.json points to (digest and size match);
//! - 2: as a blob with no media type in index.json (told index from manifest by shape);
//! - 3: as a file given to vimport (a tar, plain/gzip/zstd: OCI archive, docker archive
//!   or rootfs), planned as `vimport <file>` does.
//!
//! The target arch is x86_64 or aarch64 (bit 2). A chosen image's payload tar is read to
//! its end. An error is fine; a panic is a finding.

#![no_main]

use std::fs;
use std::io::Read;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vcontainer::vimport::{layout, plan_import, ImportRequest, ImportTarget};
use vcontainer_arch::Arch;
use vcontainer_fuzz::Scratch;
use vcontainer_oci::digest::sha256_digest;

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;
const LAYER: &[u8] = b"not really a layer";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn write_blob(dir: &Path, data: &[u8]) -> Option<String> {
    let digest = sha256_digest(data);
    let hex = digest.strip_prefix("sha256:")?;
    fs::write(dir.join("blobs/sha256").join(hex), data).ok()?;
    Some(digest)
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{size}}}"#)
}

/// A layout with the config and layer blobs and a valid manifest (reachable from a fuzzed
/// index.json or nested index by its digest).
fn base_layout(dir: &Path) -> Option<()> {
    fs::create_dir_all(dir.join("blobs/sha256")).ok()?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).ok()?;
    let config = write_blob(dir, CONFIG)?;
    let layer = write_blob(dir, LAYER)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptor(
            "application/vnd.oci.image.config.v1+json",
            &config,
            CONFIG.len()
        ),
        descriptor(
            "application/vnd.oci.image.layer.v1.tar",
            &layer,
            LAYER.len()
        ),
    );
    write_blob(dir, manifest.as_bytes())?;
    Some(())
}

fn index_of(descriptor: &str) -> String {
    format!(r#"{{"schemaVersion":2,"manifests":[{descriptor}]}}"#)
}

fn select_and_read(dir: &Path, arch: Arch) {
    let Ok(selection) = layout::select(dir, arch) else {
        return;
    };
    let Ok(payload) = layout::payload(&selection) else {
        return;
    };
    let _ = std::io::copy(&mut payload.reader(), &mut std::io::sink());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let arch = if mode & 4 == 0 {
        Arch::X86_64
    } else {
        Arch::Aarch64
    };
    let Some(scratch) = Scratch::new() else {
        return;
    };
    let dir = &scratch.dest;
    if base_layout(dir).is_none() {
        return;
    }
    match mode & 3 {
        0 => {
            if fs::write(dir.join("index.json"), rest).is_err() {
                return;
            }
            select_and_read(dir, arch);
        }
        1 | 2 => {
            let Some(digest) = write_blob(dir, rest) else {
                return;
            };
            let media_type = if mode & 3 == 1 { MEDIA_MANIFEST } else { "" };
            let index = index_of(&descriptor(media_type, &digest, rest.len()));
            if fs::write(dir.join("index.json"), index).is_err() {
                return;
            }
            select_and_read(dir, arch);
        }
        _ => {
            let file = dir.join("input.tar");
            if fs::write(&file, rest).is_err() {
                return;
            }
            let request = ImportRequest {
                path: file,
                name: None,
            };
            let target = ImportTarget {
                arch,
                runtime_binary: "docker".into(),
                import_transport: "docker-daemon:".into(),
                tool_name: "vdkr".into(),
            };
            if let Ok(plan) = plan_import(&request, &target, "/tmp/vcontainer-io/import") {
                let mut reader = plan.payload.reader();
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    }
    scratch.assert_outside_untouched();
});
