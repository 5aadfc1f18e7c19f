//! The layer cache: a finished layer blob stored under a key computed from everything that
//! determines its bytes (the planned entries with their metadata and file *content* hashes,
//! the layers below, compression, SOURCE_DATE_EPOCH). Unlike image-oci's key (package
//! versions only), a changed file can never be served from a stale entry.
//!
//! On disk it keeps image-oci's naming: `<CACHE_DIR>/<16 hex>-<layer name>/` with the marker
//! `.oci-layer-cache` (`cache_key=`, `layer_name=`, `created=`, `machine=`), plus `layer.json`
//! and the blob itself. Entries are written to a temp dir and renamed, so readers never see
//! half an entry.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::compress::Compression;
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::fsmeta::Kind;
use crate::layout::{check_blob, LayoutWriter};
use crate::plan::{file_digest, Op, Plan};

pub const MARKER: &str = ".oci-layer-cache";
const FORMAT: &str = "vcontainer-layer-cache-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedLayer {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub uncompressed_size: u64,
    pub media_type: String,
}

pub struct LayerCache {
    pub dir: PathBuf,
    pub machine: String,
}

/// Everything that decides the bytes of a layer, hashed.
pub fn cache_key(
    plan: &Plan,
    lower_diff_ids: &[Digest],
    compression: Compression,
    level: Option<i32>,
    source_date_epoch: Option<i64>,
) -> Result<String> {
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(&mut h, FORMAT.as_bytes());
    field(
        &mut h,
        format!("{compression:?}/{level:?}/{source_date_epoch:?}").as_bytes(),
    );
    for d in lower_diff_ids {
        field(&mut h, d.to_string().as_bytes());
    }
    let mut contents = content_digests(plan)?.into_iter();
    let mut first_path: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for op in &plan.ops {
        match op {
            Op::Add {
                path,
                src,
                meta,
                inode,
            } => {
                field(&mut h, b"add");
                field(&mut h, path);
                let m = serde_json::to_vec(meta).map_err(|e| Error::Json {
                    path: src.clone(),
                    source: e,
                })?;
                field(&mut h, &m);
                if let Some(id) = inode.filter(|i| i.nlink > 1 && meta.kind != Kind::Dir) {
                    let first = first_path
                        .entry((id.dev, id.ino))
                        .or_insert_with(|| path.clone());
                    field(&mut h, first);
                }
                if meta.kind == Kind::File {
                    let d = contents
                        .next()
                        .ok_or_else(|| Error::invalid("cache key: file digests out of step"))?;
                    field(&mut h, d.as_bytes());
                }
            }
            Op::Whiteout { path } => {
                field(&mut h, b"whiteout");
                field(&mut h, path);
            }
            Op::Opaque { dir } => {
                field(&mut h, b"opaque");
                field(&mut h, dir);
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// sha256 of every regular file the plan adds, in plan order. Reading and hashing the
/// files is all the cost of a cache key (and of a cache hit), so it runs on all cores.
fn content_digests(plan: &Plan) -> Result<Vec<Digest>> {
    let files: Vec<&Path> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Add { src, meta, .. } if meta.kind == Kind::File => Some(src.as_path()),
            _ => None,
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len())
        .max(1);
    // Thread t hashes files t, t + threads, t + 2*threads, ...: big and small files mixed.
    let parts: Vec<Result<Vec<Digest>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let files = &files;
                s.spawn(move || {
                    files
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|p| file_digest(p))
                        .collect::<Result<Vec<Digest>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("cache key: hashing thread panicked")))
            })
            .collect()
    });
    let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
    let mut iters: Vec<_> = parts.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(files.len());
    for i in 0..files.len() {
        let d = iters[i % threads]
            .next()
            .ok_or_else(|| Error::invalid("cache key: file digests out of step"))?;
        out.push(d);
    }
    Ok(out)
}

impl LayerCache {
    fn entry_dir(&self, key16: &str, name: &str) -> PathBuf {
        self.dir.join(format!("{key16}-{name}"))
    }

    /// Looks up a complete entry (marker present, metadata readable, key matching).
    pub fn lookup(&self, key: &str, name: &str) -> Option<(PathBuf, CachedLayer)> {
        let dir = self.entry_dir(&key[..16], name);
        let marker = fs::read_to_string(dir.join(MARKER)).ok()?;
        if !marker
            .lines()
            .any(|l| l == format!("cache_key={}", &key[..16]))
        {
            return None;
        }
        let meta: CachedLayer =
            serde_json::from_slice(&fs::read(dir.join("layer.json")).ok()?).ok()?;
        let full = fs::read_to_string(dir.join("key")).ok()?;
        if full.trim() != key {
            return None;
        }
        Some((dir.join("blob"), meta))
    }

    /// Copies a cached blob into the layout, verifying it on the way.
    pub fn restore(&self, blob: &Path, layer: &CachedLayer, out: &LayoutWriter) -> Result<()> {
        let f = fs::File::open(blob).map_err(|e| Error::io(blob, e))?;
        let mut r = HashingReader::new(f);
        let mut tmp = out.temp_blob()?;
        std::io::copy(&mut r, tmp.as_file_mut()).map_err(|e| Error::io(blob, e))?;
        let (got, n) = r.drain_finish().map_err(|e| Error::io(blob, e))?;
        check_blob(blob, &layer.digest, Some(layer.size), got, n)?;
        out.commit_blob(tmp, &layer.digest)?;
        Ok(())
    }

    /// Stores a freshly written layer blob.
    pub fn store(
        &self,
        key: &str,
        name: &str,
        blob: &Path,
        layer: &CachedLayer,
        created: &str,
    ) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let t = tmp.path();
        fs::copy(blob, t.join("blob")).map_err(|e| Error::io(blob, e))?;
        let meta = serde_json::to_vec_pretty(layer).map_err(|e| Error::Json {
            path: t.to_path_buf(),
            source: e,
        })?;
        fs::write(t.join("layer.json"), meta).map_err(|e| Error::io(t, e))?;
        fs::write(t.join("key"), format!("{key}\n")).map_err(|e| Error::io(t, e))?;
        let mut m = fs::File::create(t.join(MARKER)).map_err(|e| Error::io(t, e))?;
        write!(
            m,
            "cache_key={}\nlayer_name={name}\ncreated={created}\nmachine={}\n",
            &key[..16],
            self.machine
        )
        .map_err(|e| Error::io(t, e))?;
        let dest = self.entry_dir(&key[..16], name);
        if dest.exists() {
            let _ = fs::remove_dir_all(&dest);
        }
        let kept = tmp.keep();
        fs::rename(&kept, &dest).map_err(|e| {
            let _ = fs::remove_dir_all(&kept);
            Error::io(&dest, e)
        })?;
        Ok(())
    }
}
