//! Test fixtures for the registry and vimport end-to-end tests: a local registry on
//! loopback (Debian's `docker-registry`, plain or htpasswd-protected), and OCI layouts and
//! archives of the busybox test image built on the host with umoci/skopeo.
//!
//! Everything a fixture starts is stopped when the fixture is dropped (registry process,
//! temp dirs), so a failing test leaves nothing running.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::busybox_rootfs_tar_for;

/// The guest reaches the host's loopback through QEMU's user network at this address.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

fn run_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (bound and released; the registry binds it right after).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `docker-registry` serving a temp storage dir on 127.0.0.1:<port>.
pub struct LocalRegistry {
    child: Child,
    pub port: u16,
    /// Holds the config, the htpasswd file, the storage and the log.
    pub dir: tempfile::TempDir,
    /// `(user, password)` when protected.
    pub credentials: Option<(String, String)>,
}

impl LocalRegistry {
    /// Whether the registry binary (Debian `docker-registry`) is installed.
    pub fn available() -> bool {
        Path::new("/usr/bin/docker-registry").is_file()
    }

    /// A registry without authentication.
    pub fn plain() -> Result<Self, String> {
        Self::start(None)
    }

    /// A registry that requires `user`/`password` (bcrypt htpasswd, as the registry wants).
    pub fn with_htpasswd(user: &str, password: &str) -> Result<Self, String> {
        Self::start(Some((user.to_string(), password.to_string())))
    }

    fn start(credentials: Option<(String, String)>) -> Result<Self, String> {
        // the free port may be taken between probing and binding: try a few
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::try_start(credentials.clone()) {
                Ok(r) => return Ok(r),
                Err(e) => last_err = e,
            }
        }
        Err(format!("the local registry did not start: {last_err}"))
    }

    fn try_start(credentials: Option<(String, String)>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("vct-registry-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| e.to_string())?;
        let mut auth = String::new();
        if let Some((user, password)) = &credentials {
            let line = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]))?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, line.trim_end().to_string() + "\n")
                .map_err(|e| e.to_string())?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: vcontainer-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let port = free_port().map_err(|e| e.to_string())?;
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting docker-registry: {e}"))?;
        let mut reg = LocalRegistry {
            child,
            port,
            dir,
            credentials,
        };
        match reg.wait_ready(Duration::from_secs(20)) {
            Ok(()) => Ok(reg),
            Err(e) => Err(format!("{e}; log: {}", reg.log())),
        }
    }

    /// The status code of `GET /v2/` (200 open, 401 protected).
    pub fn probe(&self) -> std::io::Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text}")))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited ({status})"));
            }
            if let Ok(code) = self.probe() {
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err("docker-registry did not answer /v2/".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `10.0.2.2:<port>`: the registry as the guest sees it.
    pub fn guest_address(&self) -> String {
        format!("{HOST_FROM_GUEST}:{}", self.port)
    }

    /// Whether a repository has been pushed (its dir exists in the registry's storage).
    pub fn has_repository(&self, name: &str) -> bool {
        self.dir
            .path()
            .join("storage/docker/registry/v2/repositories")
            .join(name)
            .is_dir()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A docker/podman auth file (`{"auths": {"<registry>": {"auth": base64(user:pass)}}}`)
/// with the given mode.
pub fn write_auth_file(path: &Path, registry: &str, user: &str, password: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let auth = base64(format!("{user}:{password}").as_bytes());
    let body = serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string();
    std::fs::write(path, body).expect("write auth file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod auth file");
}

/// Standard base64 (with padding), as docker's auth files hold it.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `sha256:<hex>` of a file, via coreutils (the tests crate keeps its dependencies small).
fn sha256_of(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path)).expect("sha256sum");
    format!(
        "sha256:{}",
        out.split_whitespace().next().expect("sha256sum output")
    )
}

/// OCI layouts of the busybox test image, built with umoci.
pub struct BusyboxLayouts {
    pub dir: tempfile::TempDir,
}

impl BusyboxLayouts {
    pub fn new() -> Result<Self, String> {
        if run_ok(Command::new("umoci").arg("--version")).is_err() {
            return Err("umoci is not installed".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("vct-oci-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        busybox_rootfs_tar_for(&dir.path().join("rootfs.tar"), "amd64")
            .map_err(|e| e.to_string())?;
        Ok(BusyboxLayouts { dir })
    }

    /// The amd64 busybox rootfs tar.
    pub fn rootfs_tar(&self) -> PathBuf {
        self.dir.path().join("rootfs.tar")
    }

    /// The busybox rootfs tar of the OCI arch `arch` (made on first use): images labelled
    /// arm64 or arm hold code of that arch, so a guest that runs them proves it runs the arch.
    pub fn rootfs_tar_for(&self, arch: &str) -> Result<PathBuf, String> {
        if arch == "amd64" {
            return Ok(self.rootfs_tar());
        }
        let path = self.dir.path().join(format!("rootfs-{arch}.tar"));
        if !path.is_file() {
            busybox_rootfs_tar_for(&path, arch).map_err(|e| e.to_string())?;
        }
        Ok(path)
    }

    /// Adds tag `tag` for `arch` (OCI name) to the layout at `layout` (created if missing).
    fn add_image(&self, layout: &Path, tag: &str, arch: &str) -> Result<(), String> {
        if !layout.join("index.json").exists() {
            run_ok(
                Command::new("umoci")
                    .arg("init")
                    .arg("--layout")
                    .arg(layout),
            )?;
        }
        let image = format!("{}:{tag}", layout.display());
        run_ok(Command::new("umoci").args(["new", "--image", &image]))?;
        run_ok(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image", &image])
                .arg(self.rootfs_tar_for(arch)?),
        )?;
        run_ok(Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--architecture",
            arch,
            "--os",
            "linux",
            "--config.cmd",
            "/bin/sh",
        ]))?;
        Ok(())
    }

    /// A single-image layout for `arch` (e.g. "amd64"), as `<name>-oci`.
    pub fn single(&self, name: &str, arch: &str) -> Result<PathBuf, String> {
        let layout = self.dir.path().join(format!("{name}-oci"));
        self.add_image(&layout, "latest", arch)?;
        Ok(layout)
    }

    /// A multi-arch layout: one image per arch, index.json entries carrying platforms (a
    /// flat index), written minified with `platform` first. With `nested`, index.json holds
    /// one entry pointing at an image-index blob that lists the platforms.
    pub fn multi(&self, name: &str, arches: &[&str], nested: bool) -> Result<PathBuf, String> {
        let layout = self.dir.path().join(format!("{name}-oci"));
        for a in arches {
            self.add_image(&layout, a, a)?;
        }
        let index_path = layout.join("index.json");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for m in index["manifests"].as_array().cloned().unwrap_or_default() {
            let arch = m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
            match arch.as_str() {
                "arm64" => platform["variant"] = "v8".into(),
                "arm" => platform["variant"] = "v7".into(),
                _ => {}
            }
            // platform first: the old tool's parser needed digest before platform
            let mut e = serde_json::Map::new();
            e.insert("platform".into(), platform);
            for k in ["mediaType", "digest", "size"] {
                e.insert(k.into(), m[k].clone());
            }
            entries.push(serde_json::Value::Object(e));
        }
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries
        });
        let top = if nested {
            let tmp = layout.join("nested.json");
            std::fs::write(&tmp, list.to_string()).map_err(|e| e.to_string())?;
            let digest = sha256_of(&tmp);
            let size = std::fs::metadata(&tmp).map_err(|e| e.to_string())?.len();
            std::fs::rename(&tmp, layout.join("blobs/sha256").join(&digest[7..]))
                .map_err(|e| e.to_string())?;
            serde_json::json!({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"}
            }]})
        } else {
            list
        };
        std::fs::write(&index_path, top.to_string()).map_err(|e| e.to_string())?;
        Ok(layout)
    }

    /// An oci-archive (tar of a layout) of a single amd64 image, via skopeo.
    pub fn oci_archive(&self, layout: &Path, tag: &str) -> Result<PathBuf, String> {
        let out = self.dir.path().join(format!("{tag}-oci-archive.tar"));
        run_ok(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet"])
                .arg(format!("oci:{}:latest", layout.display()))
                .arg(format!("oci-archive:{}", out.display())),
        )?;
        Ok(out)
    }

    /// A docker-archive (`docker save` format) tagged `repo_tag`, via skopeo.
    pub fn docker_archive(&self, layout: &Path, repo_tag: &str) -> Result<PathBuf, String> {
        let out = self.dir.path().join("docker-archive.tar");
        run_ok(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet"])
                .arg(format!("oci:{}:latest", layout.display()))
                .arg(format!("docker-archive:{}:{repo_tag}", out.display())),
        )?;
        Ok(out)
    }

    /// The busybox rootfs as a directory.
    pub fn rootfs_dir(&self) -> Result<PathBuf, String> {
        let out = self.dir.path().join("rootfs-dir");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(self.rootfs_tar())
                .arg("-C")
                .arg(&out),
        )?;
        Ok(out)
    }

    /// The busybox rootfs tar, gzip-compressed.
    pub fn rootfs_tar_gz(&self) -> Result<PathBuf, String> {
        let out = self.dir.path().join("rootfs.tar.gz");
        let data = run_ok_bytes(Command::new("gzip").arg("-c").arg(self.rootfs_tar()))?;
        std::fs::write(&out, data).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

fn run_ok_bytes(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({})", out.status));
    }
    Ok(out.stdout)
}

/// Stops a world's memres VM when dropped, so a failing test leaves no VM behind (tests
/// still run `memres stop` themselves to check that it succeeds).
pub struct MemresGuard<'a> {
    world: &'a crate::World,
    tool: &'a str,
}

impl<'a> MemresGuard<'a> {
    pub fn new(world: &'a crate::World, tool: &'a str) -> Self {
        MemresGuard { world, tool }
    }
}

impl Drop for MemresGuard<'_> {
    fn drop(&mut self) {
        let _ = self.world.run(self.tool, ["memres", "stop"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
