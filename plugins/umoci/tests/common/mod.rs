//! Helpers shared by the integration tests: test rootfs trees, reading what a layout holds,
//! and running the real umoci/skopeo tools.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use vcontainer_ocibuild::spec::{ImageConfig, Index, Manifest};

pub const SDE: i64 = 1_700_000_000;

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    nix_euid() == 0
}

fn nix_euid() -> u32 {
    // SAFETY-free: read it from /proc instead of calling libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

pub fn sh(script: &str) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `root` holding just `/etc/<name>` (its name as content): the smallest rootfs that still
/// makes a layer; returns `root`.
pub fn etc_file_rootfs(root: PathBuf, name: &str) -> PathBuf {
    sh(&format!(
        "mkdir -p {0}/etc && echo {name} > {0}/etc/{name}",
        root.display()
    ));
    root
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A rootfs exercising what a layer must carry: owners, setuid, file capabilities, xattrs,
/// hardlinks, symlinks (merged-usr `bin`), devices, a fifo, long and non-ASCII names,
/// sticky dirs. All mtimes fixed so umoci's output is comparable. Needs root.
pub fn rich_rootfs(dir: &Path) {
    sh(&format!(
        r#"
R={dir}
mkdir -p $R && cd $R
D=$(printf 'd%.0s' {{1..120}})
mkdir -p usr/bin etc var/empty dev home/user $D/sub
echo hello > etc/hostname
printf 'x%.0s' {{1..5000}} > usr/bin/big
cp /bin/true usr/bin/su && chmod 4755 usr/bin/su
cp /bin/true usr/bin/ping
ln -s usr/bin bin
ln usr/bin/big usr/bin/big-hl
echo data > home/user/file && chown -R 1000:1000 home/user
python3 -c "import os; os.setxattr('etc/hostname','user.test',b'hello')"
setcap cap_net_raw+ep usr/bin/ping
mknod dev/null c 1 3
mkfifo dev/fifo
echo u > "etc/ünï"
echo long > $D/sub/$(printf 'f%.0s' {{1..80}})
ln -s $(printf 'l%.0s' {{1..150}}) etc/longlink
chmod 1777 var/empty
find . -exec touch -h -d @1700000000 {{}} +
"#,
        dir = dir.display()
    ));
}

/// The umoci flow of image-oci (init/new/unpack/cp -a/repack), as root (owners kept).
pub fn umoci_reference(rootfs: &Path, out: &Path) {
    sh(&format!(
        r#"
R={r}; O={o}; B={o}-bundle
umoci init --layout $O
umoci new --image $O:latest
umoci unpack --image $O:latest $B
cp -a $R/. $B/rootfs/
touch -d @$(stat -c %Y $R) $B/rootfs
chmod $(stat -c %a $R) $B/rootfs
umoci repack --image $O:latest $B
rm -rf $B
"#,
        r = rootfs.display(),
        o = out.display()
    ));
}

pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> T {
    serde_json::from_slice(&std::fs::read(p).expect("read json")).expect("parse json")
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256"))
}

pub struct Loaded {
    pub index: Index,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

pub fn load(layout: &Path) -> Loaded {
    let index: Index = read_json(&layout.join("index.json"));
    let manifest: Manifest = read_json(&blob(layout, &index.manifests[0].digest.to_string()));
    let config: ImageConfig = read_json(&blob(layout, &manifest.config.digest.to_string()));
    Loaded {
        index,
        manifest,
        config,
    }
}

/// The uncompressed tar of layer `i`.
pub fn layer_tar(layout: &Path, i: usize) -> Vec<u8> {
    let l = load(layout);
    let d = &l.manifest.layers[i];
    let f = std::fs::File::open(blob(layout, &d.digest.to_string())).expect("blob");
    let mut out = Vec::new();
    if d.media_type.ends_with("zstd") {
        zstd_decode(f, &mut out);
    } else {
        flate2::read::MultiGzDecoder::new(f)
            .read_to_end(&mut out)
            .expect("gunzip");
    }
    out
}

fn zstd_decode(f: std::fs::File, out: &mut Vec<u8>) {
    let mut child = Command::new("zstd")
        .args(["-dc"])
        .stdin(f)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(out)
        .expect("read");
    assert!(child.wait().expect("wait").success());
}

/// Entry names and type flags of a tar, in order.
pub fn tar_entries(tar: &[u8]) -> Vec<(String, char, String)> {
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in a.entries().expect("entries") {
        let e = e.expect("entry");
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        out.push((name, e.header().entry_type().as_byte() as char, link));
    }
    out
}

/// All files of a directory tree with their bytes (for byte-identity checks).
pub fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, d: &Path, m: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            if p.is_dir() {
                walk(base, &p, m);
            } else {
                let rel = p.strip_prefix(base).expect("prefix").to_path_buf();
                m.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

/// Lines produced by a build, for HIT/MISS checks.
pub fn build_logged(
    req: &vcontainer_ocibuild::BuildRequest,
) -> (
    vcontainer_ocibuild::Result<vcontainer_ocibuild::BuildReport>,
    Vec<String>,
) {
    let mut lines = Vec::new();
    let r = vcontainer_ocibuild::build(req, &mut |l| lines.push(l.to_string()));
    (r, lines)
}

/// Every blob reachable from index.json: manifests (and nested indexes), their configs and
/// layers, as hex digests. Reads the JSON loosely so any valid layout can be walked.
pub fn referenced_blobs(layout: &Path) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let idx: serde_json::Value = read_json(&layout.join("index.json"));
    let mut todo: Vec<serde_json::Value> = idx["manifests"].as_array().cloned().unwrap_or_default();
    while let Some(desc) = todo.pop() {
        let digest = desc["digest"]
            .as_str()
            .expect("descriptor digest")
            .to_string();
        let hex = digest.strip_prefix("sha256:").expect("sha256").to_string();
        if !seen.insert(hex) {
            continue;
        }
        let media = desc["mediaType"].as_str().unwrap_or_default();
        if media.ends_with("manifest.v1+json") || media.ends_with("index.v1+json") {
            let v: serde_json::Value = read_json(&blob(layout, &digest));
            for d in v["manifests"].as_array().into_iter().flatten() {
                todo.push(d.clone());
            }
            for d in v["layers"].as_array().into_iter().flatten() {
                todo.push(d.clone());
            }
            if v["config"].is_object() {
                todo.push(v["config"].clone());
            }
        }
    }
    seen
}

/// Fails unless `blobs/sha256` holds exactly the blobs index.json reaches (no orphans, no
/// leftover temp files, nothing missing).
pub fn assert_no_orphans(layout: &Path) {
    let mut files: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let refs: Vec<String> = referenced_blobs(layout).into_iter().collect();
    assert_eq!(
        files, refs,
        "blob files vs. blobs reachable from index.json"
    );
}
